# The dancu image for the scaled shape (docker-compose.yml): workers and API processes.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY dancu ./dancu
COPY api ./api
COPY streams ./streams
COPY tracing ./tracing
COPY registry ./registry
COPY gate ./gate
COPY infra ./infra
RUN pip install --no-cache-dir .
ENV DANCU_API_HOST=0.0.0.0
EXPOSE 8765
ENTRYPOINT ["dancu"]
CMD ["up", "--no-services", "--role", "all"]
