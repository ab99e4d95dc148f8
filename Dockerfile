# The dancu image for the scaled shape (docker-compose.yml): workers and API processes.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY dancu ./dancu
RUN pip install --no-cache-dir .
ENV DANCU_API_HOST=0.0.0.0
EXPOSE 8765
ENTRYPOINT ["dancu"]
CMD ["up", "--no-services", "--role", "all"]
