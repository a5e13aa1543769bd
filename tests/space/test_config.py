"""The Space's settings: each declared once (`steadydancer_space.config.setting`), read from its environment variable
and its flag alike, checked with errors naming where the value came from, and listed in the README from the
declarations."""

import re
from dataclasses import fields

import pytest

from steadydancer_space.config import (
    AppConfig,
    ConfigError,
    Limits,
    build_parser,
    main,
    parse_config,
    settings_of,
    settings_table,
)
from steadydancer.roofline import GPUS

from helpers.paths import REPO

README = REPO / "README.md"
START, END = "<!-- settings:start -->", "<!-- settings:end -->"
ALL_SETTINGS = [(cls, f, spec) for cls in (AppConfig, Limits) for f, spec in settings_of(cls)]


def _other_value(f, spec):
    """(text of the variable or flag, value the field gets) for a usable value other than the default."""
    default = f.default
    if spec.kind is bool:
        return "1", not default
    if spec.choices:
        choice = next(c for c in reversed(spec.choices) if c != default)
        return choice, choice
    if spec.kind is str:
        return "some/repo", "some/repo"
    number = (default / spec.unit if default is not None else 10) + 4  # 4n+1 stays 4n+1
    text = str(int(number)) if spec.kind is int else f"{number:.1f}"
    value = spec.kind(text)
    return text, int(value * spec.unit) if spec.unit != 1 else value


def _config_value(config, cls, name):
    return getattr(config.limits if cls is Limits else config, name)


def test_every_field_is_a_declared_setting_with_its_own_variable_and_flag():
    declared = {f.name for f, _ in settings_of(AppConfig)} | {"limits"}
    assert declared == {f.name for f in fields(AppConfig)}
    assert {f.name for f, _ in settings_of(Limits)} == {f.name for f in fields(Limits)}
    variables = [spec.variable for _, _, spec in ALL_SETTINGS]
    flags = [spec.flag for _, _, spec in ALL_SETTINGS if spec.flag]
    assert len(set(variables)) == len(variables) and len(set(flags)) == len(flags)


@pytest.mark.parametrize("cls, f, spec", ALL_SETTINGS, ids=[spec.variable for _, _, spec in ALL_SETTINGS])
def test_variable_and_flag_set_the_same_value(cls, f, spec):
    text, value = _other_value(f, spec)
    assert value != f.default
    from_env = AppConfig.from_env({spec.variable: f"  {text} "})
    assert _config_value(from_env, cls, f.name) == value
    assert from_env == parse_config([], {spec.variable: text})
    if spec.flag:
        argv = [spec.flag] if spec.kind is bool else [spec.flag, text]
        assert parse_config(argv, {}) == from_env


def test_flags_win_over_variables_and_unset_or_empty_variables_keep_defaults():
    env = {"STEADYDANCER_TINY": "yes", "STEADYDANCER_QUEUE_SIZE": "7", "STEADYDANCER_DEVICE": "cpu"}
    config = parse_config(["--no-tiny", "--queue-size", "3"], env)
    assert (config.tiny, config.queue_size, config.device) == (False, 3, "cpu")
    assert AppConfig.from_env({"STEADYDANCER_QUEUE_SIZE": " ", "STEADYDANCER_TINY": ""}) == AppConfig()
    assert AppConfig.from_env({"STEADYDANCER_TINY": "0"}).tiny is False


def test_megabyte_variables_count_bytes():
    limits = AppConfig.from_env({"STEADYDANCER_MAX_FILE_MB": "1.5", "STEADYDANCER_MAX_KEYPOINT_MB": "2"}).limits
    assert (limits.max_file_bytes, limits.max_keypoint_bytes) == (1536 * 1024, 2 * 1024 * 1024)


@pytest.mark.parametrize(
    "variable, text, message",
    [
        ("STEADYDANCER_QUEUE_SIZE", "abc", "STEADYDANCER_QUEUE_SIZE='abc' is not a whole number."),
        ("STEADYDANCER_MAX_GPU_SECONDS", "soon", "STEADYDANCER_MAX_GPU_SECONDS='soon' is not a number."),
        ("STEADYDANCER_MAX_GPU_SECONDS", "nan", "STEADYDANCER_MAX_GPU_SECONDS='nan' must be above 0."),
        ("STEADYDANCER_MAX_FRAMES", "80",
         "STEADYDANCER_MAX_FRAMES='80' must be 4n+1 and at least 5 (77 or 81 would do)."),
        ("STEADYDANCER_WINDOW_FRAMES", "2", "STEADYDANCER_WINDOW_FRAMES='2' must be 4n+1 and at least 5 (5 would do)."),
        ("STEADYDANCER_DTYPE", "int8", "STEADYDANCER_DTYPE='int8' must be one of bfloat16, float16, float32."),
        ("STEADYDANCER_ZEROGPU_SIZE", "small", "STEADYDANCER_ZEROGPU_SIZE='small' must be one of large, xlarge."),
        ("STEADYDANCER_FILE_TTL", "5", "STEADYDANCER_FILE_TTL='5' must be at least 60."),
        ("STEADYDANCER_TINY_MAX_AREA", "100", "STEADYDANCER_TINY_MAX_AREA='100' must be at least 256."),
        ("STEADYDANCER_MAX_FILE_MB", "0", "STEADYDANCER_MAX_FILE_MB='0' must be above 0."),
        ("STEADYDANCER_MAX_ASPECT", "0.5", "STEADYDANCER_MAX_ASPECT='0.5' must be at least 1."),
        ("STEADYDANCER_MAX_STEPS", "-3", "STEADYDANCER_MAX_STEPS='-3' must be above 0."),
    ],
)
def test_bad_variables_are_named(variable, text, message):
    with pytest.raises(ConfigError) as error:
        AppConfig.from_env({variable: text})
    assert str(error.value) == message


def test_a_sharded_memory_plan_needs_several_ranks():
    with pytest.raises(ConfigError, match=re.escape("--memory-plan (STEADYDANCER_MEMORY_PLAN) sharded needs several")):
        parse_config(["--memory-plan", "sharded"], {})
    with pytest.raises(ConfigError, match="torchrun --nproc-per-node N app.py"):
        AppConfig.from_env({"STEADYDANCER_MEMORY_PLAN": "sharded"})
    assert parse_config(["--memory-plan", "sharded"], {"WORLD_SIZE": "2"}).memory_plan == "sharded"


def test_bad_flags_are_named():
    message = "--max-frames 80 must be 4n+1 and at least 5 (77 or 81 would do)."
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(["--max-frames", "80"], {})
    with pytest.raises(ConfigError, match=re.escape("--concurrency 0 must be at least 1.")):
        parse_config(["--concurrency", "0"], {})
    # A bad variable is reported even when a flag would replace it: the environment is read first.
    with pytest.raises(ConfigError, match="STEADYDANCER_CONCURRENCY"):
        parse_config(["--concurrency", "2"], {"STEADYDANCER_CONCURRENCY": "x"})
    for argv in (["--max-frames", "many"], ["--gpu", "tpu"]):  # argparse's own errors: message and exit status 2
        with pytest.raises(SystemExit) as exit_:
            parse_config(argv, {})
        assert exit_.value.code == 2


def test_direct_construction_checks_name_the_field():
    message = "max_frames must be 4n+1 and at least 5 (77 or 81 would do), got 80."
    with pytest.raises(ValueError, match=re.escape(message)):
        AppConfig(max_frames=80)
    with pytest.raises(ValueError, match="max_video_seconds must be above 0, got 0"):
        Limits(max_video_seconds=0)


def test_gpu_choices_follow_the_throughput_table():
    for gpu in GPUS:
        assert AppConfig.from_env({"STEADYDANCER_GPU": gpu}).gpu == gpu
        assert parse_config(["--gpu", gpu], {}).gpu == gpu
    with pytest.raises(ConfigError, match="STEADYDANCER_GPU='tpu' must be one of auto, "):
        AppConfig.from_env({"STEADYDANCER_GPU": "tpu"})


def test_help_names_every_variable():
    text = build_parser().format_help()
    for _, _, spec in ALL_SETTINGS:
        assert spec.variable in text
        assert spec.flag is None or spec.flag in text


def test_markdown_command_prints_the_table(capsys):
    main(["--markdown"])
    assert capsys.readouterr().out == settings_table()
    table = settings_table()
    for _, _, spec in ALL_SETTINGS:
        assert f"| `{spec.variable}` |" in table


def test_readme_table_is_the_generated_one():
    text = README.read_text(encoding="utf-8")
    assert text.count(START) == 1 and text.count(END) == 1, f"README.md needs one {START} ... {END} section"
    in_readme = text.split(START, 1)[1].split(END, 1)[0].strip()
    assert in_readme == settings_table().strip(), (
        "README.md's settings table is out of date: replace the text between the markers with the output of "
        "`python -m steadydancer_space.config --markdown`."
    )
