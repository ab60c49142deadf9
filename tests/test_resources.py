"""common/resources: the data bundled with the program (default .env, services), read from the source tree here."""

from forever_slurm.common import resources


def test_the_bundled_env_default_names_the_settings():
    text = resources.read_text("env.default")
    assert text is not None and "FS_TRAEFIK_PORT=" in text and "SERVICE_LIST=" in text


def test_a_missing_file_reads_as_none():
    assert resources.read_bytes("services/no-such-service/x.sub") is None
    assert resources.read_text("nothing-here") is None


def test_bundled_files_are_service_files_that_can_be_read():
    files = resources.bundled_files()
    assert files and all(path.startswith("services/") for path in files)
    assert not any(part.startswith(".") or part == "__pycache__" for path in files for part in path.split("/"))
    assert any(path.endswith(".sub") for path in files)
    for path in files:
        assert resources.read_bytes(path) is not None, path
