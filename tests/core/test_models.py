def test_every_path_has_its_traits_and_only_the_traditional_one_is_rebuilt():
    """Path traits live in one table (PATH_TRAITS): what kit, datasets and the learner
    ask of a path, never its name."""
    from services.core.models import PATH_TRAITS, GenerationPath, traits_of

    assert set(PATH_TRAITS) == set(GenerationPath)
    assert [p for p, t in PATH_TRAITS.items() if t.rebuildable] == [GenerationPath.TRADITIONAL]
    assert not GenerationPath.RAG.traits.learnable
    assert traits_of("hybrid") == GenerationPath.HYBRID.traits and traits_of("nope") is None
