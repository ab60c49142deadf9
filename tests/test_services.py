"""common/services: service folders (the user's and the bundled ones), their .sub and .yml, and staging."""

import os
import stat

import pytest

from forever_slurm.common import services, settings
from forever_slurm.common.errors import ConfigError

SUB = "#!/bin/bash\n#SBATCH --job-name %s\n#SBATCH --time=1:00:00\n%s\nexec python3 -m http.server\n"


@pytest.fixture
def layout(tmp_path):
    return settings.Layout(str(tmp_path))


def service(layout, name, script=None, files=None, options=""):
    folder = os.path.join(layout.services, name)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name + ".sub"), "w") as handle:
        handle.write(script if script is not None else SUB % (name, options))
    for filename, text in (files or {}).items():
        with open(os.path.join(folder, filename), "w") as handle:
            handle.write(text)
    return folder


def test_available_is_the_bundled_services_and_the_users_folders(layout):
    bundled = services.bundled_names()
    assert "hello-python" in bundled
    service(layout, "mine")
    os.makedirs(os.path.join(layout.services, ".hidden"))
    assert services.available(layout) == sorted(set(bundled) | {"mine"})


def test_load_reads_script_template_output_and_warning(layout):
    folder = service(layout, "web", files={"web.yml": "http: {}\n"},
                     options="#SBATCH --output=web.log\n#SBATCH --signal=B:USR1@120")
    found = services.load(layout, "web")
    assert found._replace(options=()) == services.ServiceDef("web", folder, os.path.join(folder, "web.sub"),
                                                             os.path.join(folder, "web.yml"), True, 120, 3600)
    assert [option for _, option, _ in found.options] == ["--job-name", "--time", "--output", "--signal"]
    service(layout, "plain", options="#SBATCH --signal=USR1\n#SBATCH -t 1:00:00\n#SBATCH --time=2-0")
    plain = services.load(layout, "plain")
    assert (plain.template, plain.script_sets_output, plain.warning_seconds) == (None, False, 60)
    assert plain.time_limit == 2 * 86400, "the last --time wins, as in sbatch"


@pytest.mark.parametrize("name, script, message, line", [
    ("svc", SUB % ("other", ""), "differs from the service name", 2),
    ("svc", "#!/bin/bash\necho hi\n#SBATCH --job-name svc\n", "no '#SBATCH --job-name svc' line", 1),
])
def test_a_script_that_cannot_be_used_is_refused_with_its_line(layout, name, script, message, line):
    service(layout, name, script)
    with pytest.raises(ConfigError) as caught:
        services.load(layout, name)
    assert message in str(caught.value) and caught.value.line == line
    assert caught.value.path == os.path.join(layout.services, name, name + ".sub")


def test_a_script_that_is_not_utf8_names_the_line_of_the_bad_byte(layout):
    folder = service(layout, "svc")
    with open(os.path.join(folder, "svc.sub"), "wb") as handle:
        handle.write(b"#!/bin/bash\n#SBATCH --job-name svc\necho \xff\n")
    with pytest.raises(ConfigError, match="not UTF-8") as caught:
        services.load(layout, "svc")
    assert caught.value.line == 3


def test_unknown_names_and_folders_without_a_script_are_refused(layout):
    with pytest.raises(ConfigError, match="not a valid service name"):
        services.load(layout, "has space")
    with pytest.raises(ConfigError, match="unknown service 'nope'"):
        services.load(layout, "nope")
    os.makedirs(os.path.join(layout.services, "empty"))
    with pytest.raises(ConfigError, match="no Slurm script"):
        services.load(layout, "empty")


def test_a_bundled_service_is_unpacked_once_and_never_over_the_users_copy(layout):
    with pytest.raises(ConfigError, match="not unpacked yet"):
        services.load(layout, "hello-python")
    assert not os.path.exists(layout.services), "load reads only"
    assert services.unpack_bundled(layout, "hello-python") is True
    loaded = services.load(layout, "hello-python")
    script = loaded.script
    assert stat.S_IMODE(os.stat(script).st_mode) == 0o755
    with open(script, "a") as handle:
        handle.write("# my edit\n")
    assert services.unpack_bundled(layout, "hello-python") is False
    with open(script) as handle:
        assert handle.read().endswith("# my edit\n")
    assert services.unpack_bundled(layout, "not-bundled") is False


def test_stage_copies_all_but_the_template_and_keeps_a_changed_copy(layout):
    folder = service(layout, "web", files={"web.yml": "http: {}\n", "serve.py": "print(1)\n"})
    os.chmod(os.path.join(folder, "web.sub"), 0o775)
    staged = services.stage(layout, services.load(layout, "web"))
    assert staged == os.path.join(layout.work, "web.sub")
    assert sorted(os.listdir(layout.work)) == ["serve.py", "web.sub"]
    assert stat.S_IMODE(os.stat(staged).st_mode) == 0o755, "exec bits kept, group write dropped"
    assert os.path.isfile(os.path.join(layout.root, "freeport.sh"))
    with open(os.path.join(folder, "serve.py"), "w") as handle:
        handle.write("print(2)\n")
    services.stage(layout, services.load(layout, "web"))
    backups = [n for n in os.listdir(layout.work) if n.startswith("serve.py.bak-")]
    assert len(backups) == 1
    with open(os.path.join(layout.work, "serve.py")) as handle:
        assert handle.read() == "print(2)\n"
    services.stage(layout, services.load(layout, "web"))
    assert len([n for n in os.listdir(layout.work) if n.startswith("serve.py.bak-")]) == 1, "unchanged: no backup"


def test_the_script_and_template_named_like_the_service_win_over_others(layout):
    folder = service(layout, "web", files={"web.yml": "http: {}\n", "web.bak.yml": "http: {}\n",
                                           "web-old.sub": SUB % ("web", "")})
    found = services.load(layout, "web")
    assert (found.script, found.template) == (os.path.join(folder, "web.sub"), os.path.join(folder, "web.yml"))
    os.remove(os.path.join(folder, "web.sub"))
    assert services.load(layout, "web").script == os.path.join(folder, "web-old.sub"), "else the first, as before"


@pytest.mark.parametrize("own", ["state.json", "forever-slurm.lock", "traefik.pid", "cron-forever-traefik.lock",
                                 "disk-reserve", "slurm-output"])
def test_a_service_file_named_like_one_of_ours_in_work_is_refused_and_nothing_is_staged(layout, own):
    folder = service(layout, "web", files={own: "mine\n", "serve.py": "print(1)\n"})
    os.makedirs(layout.work)
    with open(layout.state_file, "w") as handle:
        handle.write("{}")
    with pytest.raises(ConfigError, match="forever-slurm uses in .work/") as caught:
        services.stage(layout, services.load(layout, "web"))
    assert caught.value.path == os.path.join(folder, own)
    assert sorted(os.listdir(layout.work)) == ["state.json"]
    with open(layout.state_file) as handle:
        assert handle.read() == "{}"


def test_every_name_the_code_writes_in_work_counts_as_ours():
    """Scans src/ for os.path.join(<layout>.work or .host_work, "<name>"...): a new file of ours must be added to
    settings._OWN_WORK_NAME_RE, or a service file of that name would be staged over it."""
    import re
    top = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src", "forever_slurm")
    names = set()
    for folder, _, files in os.walk(top):
        for filename in files:
            if filename.endswith(".py"):
                with open(os.path.join(folder, filename)) as handle:
                    text = handle.read()
                names.update(re.findall(r"os\.path\.join\((?:self|self\.layout|layout)\.(?:host_)?work, \"([^\"]+)\"",
                                       text))
    assert {"state.json", "traefik.pid", "disk-reserve", "backup", "hosts", "leader", "wake-spool"} <= {
        n.replace("%s", "x") for n in names}
    for name in names:
        assert settings.Layout.is_own_work_name(name.replace("%s", "x")), name
    assert not settings.Layout.is_own_work_name("serve.py")


def test_a_large_file_is_staged_whole(layout):
    folder = service(layout, "web")
    big = os.path.join(folder, "model.bin")
    with open(big, "wb") as handle:
        handle.truncate(65 * 1024 * 1024)
        handle.seek(0, os.SEEK_END)
        handle.write(b"end")
    services.stage(layout, services.load(layout, "web"))
    staged = os.path.join(layout.work, "model.bin")
    assert os.path.getsize(staged) == os.path.getsize(big)
    with open(staged, "rb") as handle:
        handle.seek(-3, os.SEEK_END)
        assert handle.read() == b"end"


def test_short_options_glued_to_their_value_are_read(layout):
    service(layout, "web", script="#!/bin/bash\n#SBATCH -Jweb\n#SBATCH -oweb.log\nexec true\n")
    assert services.load(layout, "web").script_sets_output
