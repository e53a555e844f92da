# One image for every service; the compose file picks the service by command.
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY pyproject.toml README.md ./
COPY services ./services
COPY scripts ./scripts
COPY protos ./protos
COPY schemas ./schemas
COPY topics ./topics
RUN pip install --no-cache-dir -e . && python scripts/gen_proto.py
EXPOSE 9001 8081
ENTRYPOINT ["testdata"]
CMD ["service", "bridge"]
