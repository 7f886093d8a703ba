"""The shipped Dockerfile builds the image the issue asks for, read without a Docker daemon: pinned
base, dependencies from the hashed lock file, no pip or setuptools in the final image, a numeric
non-root user, and the console script as the entrypoint. Each check is also run against a broken
copy of the Dockerfile, so that it is known to fail."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PYPROJECT = ROOT / "pyproject.toml"

VENV = "/opt/venv"
RUNTIME_LOCK = "requirements.lock"
BUILD_LOCK = "requirements-build.lock"
DEBIAN_RELEASES = ("bookworm", "trixie", "forky")


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int

    def flags_and_words(self) -> tuple[dict[str, str], list[str]]:
        """COPY/ADD style arguments: leading `--name=value` flags, then the words."""
        flags: dict[str, str] = {}
        words = self.args.split()
        while words and words[0].startswith("--"):
            name, _, value = words.pop(0)[2:].partition("=")
            flags[name] = value
        return flags, words


@dataclass
class Stage:
    base: str
    name: str | None
    line: int
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None

    def commands(self) -> list[list[str]]:
        """Each shell command of the stage's RUN instructions, split into words."""
        commands: list[list[str]] = []
        for run in self.all("RUN"):
            for command in re.split(r"&&|\|\||;", run.args):
                words = shlex.split(command)
                if words:
                    commands.append(words)
        return commands


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def stage_named(self, name: str) -> Stage | None:
        return next((s for s in self.stages if s.name == name), None)


def logical_lines(text: str) -> list[tuple[int, str]]:
    """Docker's line handling: a trailing backslash continues the instruction, and comment lines
    are dropped, also in the middle of a continued instruction."""
    lines: list[tuple[int, str]] = []
    parts: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not parts:
            start = number
        continued = stripped.endswith("\\")
        parts.append(stripped[:-1].strip() if continued else stripped)
        if not continued:
            lines.append((start, " ".join(parts)))
            parts = []
    if parts:
        lines.append((start, " ".join(parts)))
    return lines


def substitute(value: str, variables: dict[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return variables.get(name, match.group(0))

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", replace, value)


def parse(text: str) -> Dockerfile:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for number, line in logical_lines(text):
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "ARG" and not stages:
            variable, _, default = args.partition("=")
            global_args[variable] = default.strip("\"'")
        elif keyword == "FROM":
            words = [w for w in args.split() if not w.startswith("--platform")]
            stage_name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=substitute(words[0], global_args), name=stage_name, line=number))
        elif stages:
            stages[-1].instructions.append(Instruction(keyword, args, number))
    return Dockerfile(global_args, stages)


def console_scripts() -> set[str]:
    pyproject = tomllib.loads(PYPROJECT.read_text())
    return set(pyproject["project"]["scripts"])


# pip's general options that take a value, which come before the subcommand.
PIP_OPTIONS_WITH_A_VALUE = {"--python", "--log", "--proxy", "--timeout", "--retries", "--cache-dir", "--cert"}


def is_pip(words: list[str], subcommand: str) -> bool:
    """`pip ...`, `/some/venv/bin/pip3 ...` or `python -m pip ...`, running `subcommand`."""
    if words and Path(words[0]).name in ("pip", "pip3"):
        rest = words[1:]
    elif words[1:3] == ["-m", "pip"]:
        rest = words[3:]
    else:
        return False
    i = 0
    while i < len(rest) and rest[i].startswith("-"):
        i += 2 if rest[i] in PIP_OPTIONS_WITH_A_VALUE else 1
    return i < len(rest) and rest[i] == subcommand


def requirement_files(words: list[str]) -> set[str]:
    """The files a pip command reads with `-r FILE`, `-rFILE` or `--requirement FILE`."""
    files = {w[2:] for w in words if w.startswith("-r") and len(w) > 2}
    files |= {words[i + 1] for i, w in enumerate(words[:-1]) if w in ("-r", "--requirement")}
    return files


def root_image(dockerfile: Dockerfile, stage: Stage) -> str:
    """The image a stage starts from, following `FROM <earlier stage>`."""
    seen = 0
    while (parent := dockerfile.stage_named(stage.base)) is not None and seen < len(dockerfile.stages):
        stage, seen = parent, seen + 1
    return stage.base


# Each check returns what is wrong; an empty list means the Dockerfile passes it.


def check_bases_are_pinned(dockerfile: Dockerfile) -> list[str]:
    problems = []
    for stage in dockerfile.stages:
        if dockerfile.stage_named(stage.base) is not None:
            continue
        image, _, digest = stage.base.partition("@")
        repository, _, tag = image.rpartition(":")
        if "$" in stage.base:
            problems.append(f"line {stage.line}: FROM {stage.base}: a variable without a default")
        elif not repository or "/" in tag or tag == "latest":
            problems.append(f"line {stage.line}: FROM {stage.base}: no tag, or a floating one")
        elif not re.fullmatch(r"\d+\.\d+\.\d+-[a-z0-9.-]+", tag):
            problems.append(f"line {stage.line}: FROM {stage.base}: the tag has no patch version")
        elif not tag.endswith(DEBIAN_RELEASES):
            problems.append(f"line {stage.line}: FROM {stage.base}: the tag names no Debian release")
        if digest and not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            problems.append(f"line {stage.line}: FROM {stage.base}: malformed digest")
    return problems


def check_stages_share_the_base(dockerfile: Dockerfile) -> list[str]:
    # The venv's bin/python is a symlink to the base's interpreter, so the final stage must have
    # the very interpreter the venv was built with.
    bases = {root_image(dockerfile, stage) for stage in dockerfile.stages}
    return [] if len(bases) == 1 else [f"the stages start from different images: {sorted(bases)}"]


def check_final_user_is_numeric_non_root(dockerfile: Dockerfile) -> list[str]:
    user = dockerfile.final.last("USER")
    if user is None:
        return ["the final stage sets no USER: the image would run as root"]
    match = re.fullmatch(r"(\d+):(\d+)", user.args)
    if match is None:
        return [f"USER {user.args}: not numeric uid:gid (runAsNonRoot can only check numbers)"]
    if "0" in (match.group(1).lstrip("0") or "0", match.group(2).lstrip("0") or "0"):
        return [f"USER {user.args}: root"]
    return []


def check_entrypoint_is_the_console_script(dockerfile: Dockerfile) -> list[str]:
    entrypoint = dockerfile.final.last("ENTRYPOINT")
    if entrypoint is None:
        return ["the final stage has no ENTRYPOINT"]
    try:
        argv = json.loads(entrypoint.args)
    except json.JSONDecodeError:
        return [f"ENTRYPOINT {entrypoint.args}: shell form; SIGTERM would go to a shell"]
    wanted = {f"{VENV}/bin/{script}" for script in console_scripts()}
    if not isinstance(argv, list) or not argv or argv[0] not in wanted:
        return [f"ENTRYPOINT {entrypoint.args}: not one of pyproject's console scripts {sorted(wanted)}"]
    return []


def check_final_stage_copies_only_the_venv(dockerfile: Dockerfile) -> list[str]:
    problems = []
    copies = dockerfile.final.all("COPY") + dockerfile.final.all("ADD")
    for copy in copies:
        flags, words = copy.flags_and_words()
        if "from" not in flags or words != [VENV, VENV]:
            problems.append(
                f"line {copy.line}: {copy.keyword} {copy.args}: the final stage takes only {VENV}"
            )
    if not copies:
        problems.append(f"the final stage does not copy {VENV}")
    return problems


def check_locks_are_installed_with_hashes(dockerfile: Dockerfile) -> list[str]:
    problems = []
    for lock in (RUNTIME_LOCK, BUILD_LOCK):
        installed = False
        for stage in dockerfile.stages:
            copied = {
                words[-1]
                for copy in stage.all("COPY")
                for flags, words in [copy.flags_and_words()]
                if "from" not in flags and words[:-1] == [lock]
            }
            for words in stage.commands():
                if is_pip(words, "install") and copied & requirement_files(words):
                    installed = True
                    missing = {"--require-hashes", "--no-deps"} - set(words)
                    if missing:
                        problems.append(f"{lock} is installed without {sorted(missing)}")
        if not installed:
            problems.append(f"{lock} is not copied into a stage and installed with pip -r")
    return problems


def check_pip_keeps_no_cache(dockerfile: Dockerfile) -> list[str]:
    return [
        f"`{' '.join(words)}` without --no-cache-dir"
        for stage in dockerfile.stages
        for words in stage.commands()
        if (is_pip(words, "install") or is_pip(words, "wheel")) and "--no-cache-dir" not in words
    ]


def check_final_image_has_no_pip_or_setuptools(dockerfile: Dockerfile) -> list[str]:
    problems = []
    final = dockerfile.final
    removed: set[str] = set()
    for words in final.commands():
        if is_pip(words, "install"):
            problems.append(f"the final stage runs `{' '.join(words)}`")
        if is_pip(words, "uninstall") and ("--yes" in words or "-y" in words):
            removed |= set(words[words.index("uninstall") + 1 :])
    missing = {"pip", "setuptools", "wheel"} - removed
    if missing:
        problems.append(f"the final stage keeps the base's {sorted(missing)}")
    venv_made_without_pip = any(
        "venv" in words and "--without-pip" in words and VENV in words
        for stage in dockerfile.stages[:-1]
        for words in stage.commands()
    )
    if not venv_made_without_pip:
        problems.append(f"{VENV} is not created with --without-pip: it would carry pip and setuptools")
    return problems


CHECKS: list[Callable[[Dockerfile], list[str]]] = [
    check_bases_are_pinned,
    check_stages_share_the_base,
    check_final_user_is_numeric_non_root,
    check_entrypoint_is_the_console_script,
    check_final_stage_copies_only_the_venv,
    check_locks_are_installed_with_hashes,
    check_pip_keeps_no_cache,
    check_final_image_has_no_pip_or_setuptools,
]


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__.removeprefix("check_"))
def test_the_dockerfile_passes(check: Callable[[Dockerfile], list[str]]) -> None:
    assert check(parse(DOCKERFILE.read_text())) == []


BASE_LINE = "ARG BASE_IMAGE=python:3.11.17-slim-bookworm"
FINAL_FROM = "FROM ${BASE_IMAGE}\n# The base ships"
RUNTIME_INSTALL = "install --no-cache-dir --require-hashes --no-deps \\\n        --only-binary"
UNINSTALL = "python -m pip uninstall --yes pip setuptools wheel"
ENTRYPOINT = 'ENTRYPOINT ["/opt/venv/bin/stormservice-controller"]'
VENV_COPY = "COPY --from=build /opt/venv /opt/venv"

# (what is broken, the Dockerfile's text, its replacement, the check that must notice)
BROKEN: list[tuple[str, str, str, Callable[[Dockerfile], list[str]], str]] = [
    (
        "minor-only tag",
        BASE_LINE,
        "ARG BASE_IMAGE=python:3.11-slim-bookworm",
        check_bases_are_pinned,
        "no patch version",
    ),
    ("latest", BASE_LINE, "ARG BASE_IMAGE=python:latest", check_bases_are_pinned, "floating"),
    ("no tag", BASE_LINE, "ARG BASE_IMAGE=python", check_bases_are_pinned, "floating"),
    (
        "no Debian release",
        BASE_LINE,
        "ARG BASE_IMAGE=python:3.11.17-slim",
        check_bases_are_pinned,
        "no Debian release",
    ),
    (
        "unset variable",
        "FROM ${BASE_IMAGE} AS build",
        "FROM ${PYTHON} AS build",
        check_bases_are_pinned,
        "variable without a default",
    ),
    (
        "bad digest",
        BASE_LINE,
        BASE_LINE + "@sha256:0123",
        check_bases_are_pinned,
        "malformed digest",
    ),
    (
        "other final base",
        FINAL_FROM,
        "FROM python:3.11.17-slim-trixie\n# The base ships",
        check_stages_share_the_base,
        "different images",
    ),
    ("root", "USER 65532:65532", "USER 0:0", check_final_user_is_numeric_non_root, "root"),
    ("root group", "USER 65532:65532", "USER 65532:00", check_final_user_is_numeric_non_root, "root"),
    ("user name", "USER 65532:65532", "USER controller", check_final_user_is_numeric_non_root, "not numeric"),
    ("no user", "USER 65532:65532\n", "", check_final_user_is_numeric_non_root, "no USER"),
    (
        "shell form",
        ENTRYPOINT,
        "ENTRYPOINT /opt/venv/bin/stormservice-controller",
        check_entrypoint_is_the_console_script,
        "shell form",
    ),
    (
        "python -m",
        ENTRYPOINT,
        'ENTRYPOINT ["python", "-m", "controller"]',
        check_entrypoint_is_the_console_script,
        "console scripts",
    ),
    (
        "script outside the venv",
        ENTRYPOINT,
        'ENTRYPOINT ["stormservice-controller"]',
        check_entrypoint_is_the_console_script,
        "console scripts",
    ),
    ("no entrypoint", ENTRYPOINT, 'CMD ["python3"]', check_entrypoint_is_the_console_script, "no ENTRYPOINT"),
    (
        "wheels kept",
        VENV_COPY,
        VENV_COPY + "\nCOPY --from=build /tmp/wheels /wheels",
        check_final_stage_copies_only_the_venv,
        "takes only",
    ),
    (
        "sources copied",
        VENV_COPY,
        VENV_COPY + "\nCOPY controller /src/controller",
        check_final_stage_copies_only_the_venv,
        "takes only",
    ),
    (
        "hashes not required",
        RUNTIME_INSTALL,
        "install --no-cache-dir --no-deps \\\n        --only-binary",
        check_locks_are_installed_with_hashes,
        "--require-hashes",
    ),
    (
        "dependencies resolved again",
        RUNTIME_INSTALL,
        "install --no-cache-dir --require-hashes \\\n        --only-binary",
        check_locks_are_installed_with_hashes,
        "--no-deps",
    ),
    (
        "another requirements file",
        "COPY requirements.lock /tmp/requirements.lock",
        "COPY requirements.txt /tmp/requirements.lock",
        check_locks_are_installed_with_hashes,
        "requirements.lock is not copied",
    ),
    (
        "build tools unpinned",
        "--require-hashes --no-deps -r /tmp/requirements-build.lock",
        "--no-deps setuptools wheel",
        check_locks_are_installed_with_hashes,
        "requirements-build.lock is not copied",
    ),
    (
        "wheel cache",
        "pip wheel --no-cache-dir --no-deps",
        "pip wheel --no-deps",
        check_pip_keeps_no_cache,
        "pip wheel",
    ),
    (
        "install cache",
        "install --no-cache-dir --no-deps /tmp/wheels",
        "install --no-deps /tmp/wheels",
        check_pip_keeps_no_cache,
        "/tmp/wheels",
    ),
    (
        "base's pip kept",
        UNINSTALL,
        "python -m pip --version",
        check_final_image_has_no_pip_or_setuptools,
        "keeps the base's",
    ),
    (
        "setuptools kept",
        UNINSTALL,
        "python -m pip uninstall --yes pip wheel",
        check_final_image_has_no_pip_or_setuptools,
        "['setuptools']",
    ),
    (
        "venv with pip",
        "python -m venv --without-pip /opt/venv",
        "python -m venv /opt/venv",
        check_final_image_has_no_pip_or_setuptools,
        "--without-pip",
    ),
    (
        "pip install in the final stage",
        VENV_COPY,
        VENV_COPY + "\nRUN pip install --no-cache-dir requests",
        check_final_image_has_no_pip_or_setuptools,
        "the final stage runs",
    ),
]


@pytest.mark.parametrize(("old", "new", "check", "says"), [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_a_broken_dockerfile_fails_its_check(
    old: str, new: str, check: Callable[[Dockerfile], list[str]], says: str
) -> None:
    text = DOCKERFILE.read_text()
    assert text.count(old) == 1, f"the Dockerfile changed: update this case ({old!r})"
    problems = check(parse(text.replace(old, new)))
    assert problems != [] and all(says in problem for problem in problems), problems


def test_the_parser_joins_continued_lines_and_drops_comments_inside_them() -> None:
    dockerfile = parse(
        "# syntax=docker/dockerfile:1\n"
        "ARG BASE=python:3.11.17-slim-bookworm\n"
        "FROM $BASE AS build\n"
        "RUN a \\\n"
        "# a comment Docker drops\n"
        "    && b\n"
        "from build\n"
        "user 1:1\n"
    )
    build, final = dockerfile.stages
    assert build.base == "python:3.11.17-slim-bookworm" and build.name == "build"
    assert build.commands() == [["a"], ["b"]]
    assert root_image(dockerfile, final) == "python:3.11.17-slim-bookworm"
    assert final.last("USER") == Instruction("USER", "1:1", 8)


@pytest.mark.parametrize(
    ("command", "subcommand", "expected"),
    [
        ("pip --python /opt/venv/bin/python install -r x", "install", True),
        ("/opt/build/bin/pip3 wheel .", "wheel", True),
        ("python3.11 -m pip uninstall --yes pip wheel", "uninstall", True),
        ("python3.11 -m pip uninstall --yes pip wheel", "wheel", False),
        ("echo pip install", "install", False),
    ],
)
def test_pip_commands_are_told_by_their_subcommand(command: str, subcommand: str, expected: bool) -> None:
    assert is_pip(shlex.split(command), subcommand) is expected


# .dockerignore: the patterns use Docker's syntax (Go's filepath.Match plus `**`); a pattern that
# matches a directory applies to everything under it, and the last matching pattern decides.


def dockerignore_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    for token in re.findall(r"\*\*/|\*\*|\*|\?|[^*?]+", pattern.strip("/")):
        out += {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(token, re.escape(token))
    return re.compile(out)


def in_build_context(path: str, dockerignore: str) -> bool:
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    included = True
    for line in dockerignore.splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        regex = dockerignore_regex(pattern.removeprefix("!"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            included = negated
    return included


def context_sources(dockerfile: Dockerfile) -> list[str]:
    return [
        source
        for stage in dockerfile.stages
        for copy in stage.all("COPY") + stage.all("ADD")
        for flags, words in [copy.flags_and_words()]
        if "from" not in flags
        for source in words[:-1]
    ]


def test_everything_the_dockerfile_copies_is_in_the_build_context() -> None:
    dockerignore = DOCKERIGNORE.read_text()
    sources = context_sources(parse(DOCKERFILE.read_text()))
    assert {RUNTIME_LOCK, BUILD_LOCK, "pyproject.toml", "apis", "controller"} <= set(sources)
    assert [s for s in sources if not in_build_context(s, dockerignore)] == []
    assert in_build_context("apis/openapi/podtemplatespec-v1.34.json", dockerignore)


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".git/HEAD",
        ".cluster/etcd/member",
        "tests/unit/manifests/test_dockerfile.py",
        "e2e/README.md",
        "apis/__pycache__/types.cpython-311.pyc",
        "controller/runtime/__pycache__/client.cpython-311.pyc",
        "stormservice_controller.egg-info/PKG-INFO",
        ".mypy_cache/3.11/x.json",
    ],
)
def test_the_build_context_leaves_out(path: str) -> None:
    assert not in_build_context(path, DOCKERIGNORE.read_text())


def test_a_dockerignore_that_leaves_out_the_lock_is_noticed() -> None:
    broken = DOCKERIGNORE.read_text().replace("!requirements.lock\n", "")
    sources = context_sources(parse(DOCKERFILE.read_text()))
    assert [s for s in sources if not in_build_context(s, broken)] == [RUNTIME_LOCK]


def test_the_kind_overlay_sets_the_deployments_image_to_what_make_image_builds() -> None:
    # kustomize's `images:` replaces nothing, silently, when its name is not the image's name.
    overlay = yaml.safe_load((ROOT / "e2e" / "kind" / "kustomization.yaml").read_text())
    deployment = yaml.safe_load((ROOT / "manifests" / "manager" / "deployment.yaml").read_text())
    (manager,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "manager"]
    makefile_image = re.search(r"^IMAGE\s*\?=\s*(\S+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert makefile_image is not None
    (image,) = overlay["images"]
    assert image["name"] == manager["image"].rpartition(":")[0]
    assert f"{image['name']}:{image['newTag']}" == makefile_image.group(1)
    assert overlay["resources"] == ["../../manifests/default"]
