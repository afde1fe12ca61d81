import dataclasses
import itertools
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml

from components import baseline, evaluate, export, gate, ingest, mlnt, noise, validate
from components.common.config import ConfigError, apply_override, build, cli, load_params, parse, step_configs
from components.common.steps import STEPS

ROOT = Path(__file__).resolve().parents[2]
MODULES = {"ingest": ingest, "validate": validate, "noise": noise, "baseline": baseline, "mlnt": mlnt,
           "evaluate": evaluate, "export": export, "gate": gate}
SECTIONS = {"ingest": ingest.IngestConfig, "validate": validate.ValidateConfig, "noise": noise.NoiseConfig,
            "baseline": baseline.BaselineConfig, "mlnt": mlnt.MlntStepConfig, "evaluate": evaluate.EvaluateConfig,
            "export": export.ExportConfig, "gate": gate.GateConfig}


@pytest.mark.parametrize("name", ["params.yaml", "recipes/clothing1m.yaml", "recipes/imagefolder.yaml"])
def test_params_files_match_the_typed_configs_exactly(name):
    params = yaml.safe_load((ROOT / name).read_text())
    assert set(params) == set(SECTIONS)
    for section, cls in SECTIONS.items():
        assert set(params[section]) == {f.name for f in dataclasses.fields(cls)}, section
        build(cls, params[section], where=section)  # every value has the right type


def test_params_yaml_holds_the_step_configs_defaults():
    """One set of defaults: a step run without params.yaml (``NoiseConfig()``) is the pipeline's default run."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, cls in SECTIONS.items():
        assert build(cls, params[section], where=section) == cls(), section


def test_the_clothing1m_recipe_is_the_authors():
    """baseline.py and main.py of the authors' code: the CE schedule, the MLNT settings in iterations of 1M / 32."""
    configs = {section: build(cls, load_params(ROOT / "recipes/clothing1m.yaml")[section], where=section)
               for section, cls in SECTIONS.items()}
    base, meta, data = configs["baseline"], configs["mlnt"], configs["ingest"]
    assert (data.dataset, data.resize, data.image_size, configs["noise"].kind) == ("clothing1m", 256, 224, "human")
    for c in (base, meta):
        assert (c.network if c is base else "resnet50", c.pretrained, c.batch_size, c.lr, c.momentum,
                c.weight_decay, c.augment, c.eval_every) == ("resnet50", True, 32, 0.0008, 0.9, 0.001, False, 1000)
    assert (base.epochs, base.lr_milestones, base.lr_gamma) == (3, (2.0,), 0.1)  # lr / 10 in the third epoch
    steps = 1_000_000 // 32
    assert (meta.epochs, meta.warm_start, meta.mode, meta.num_sets, meta.fraction, meta.neighbours) == \
        (1, False, "exact", 10, 0.5, 10)
    assert (meta.inner_lr, meta.meta_weight, meta.ema_during_ramp, meta.ema_after_ramp) == (0.02, 1.0, 0.99, 0.999)
    assert (round(meta.ramp_start * steps), round(meta.ramp_end * steps)) == (500, 2000)  # start_iter, mid_iter


def test_every_step_module_has_a_section_of_its_own_name():
    assert step_configs() == SECTIONS and list(step_configs()) == list(STEPS)  # the table every step checks with
    for section, cls in SECTIONS.items():
        module = MODULES[section]
        assert callable(module.main) and callable(module.run)
        assert typing.get_type_hints(module.run)["config"] is cls


def test_overrides_are_type_checked(tmp_path):
    params = {"noise": {"rate": 0.2}}
    apply_override(params, "noise.rate=0.3", SECTIONS)
    apply_override(params, "noise.seed=7", SECTIONS)
    config = build(noise.NoiseConfig, params["noise"], where="noise")
    assert (config.rate, config.seed) == (0.3, 7)
    assert build(noise.NoiseConfig, {"rate": 1}, where="noise").rate == 1.0  # an int is a valid float
    assert build(mlnt.MlntStepConfig, {"lr_milestones": [3, 6]}, where="mlnt").lr_milestones == (3.0, 6.0)


@pytest.mark.parametrize(("assignment", "message"), [
    ("noise.seed=abc", r"noise.seed: expected int, found 'abc' \(str\)"),
    ("noise.val_clean=3", r"noise.val_clean: expected bool, found 3 \(int\)"),
    ("noise.seed=true", r"noise.seed: expected int, found True \(bool\)"),
    ("mlnt.lr_milestones=5", r"mlnt.lr_milestones: expected a list, found 5 \(int\)"),
    ("mlnt.lr_milestones=[1, x]", r"mlnt.lr_milestones\[1\]: expected float, found 'x' \(str\)"),
    ("noise.rate=1.5", r"noise: rate: expected a number in \[0, 1\], found 1.5"),
    ("noise.kind=pairs", r"noise.kind: expected one of 'none', 'symmetric', 'uniform_other', .*found 'pairs'"),
    ("ingest.channels=true", r"ingest.channels: expected one of 1, 3, found True"),  # True == 1 chose grayscale
    ("ingest.channels=3.0", r"ingest.channels: expected one of 1, 3, found 3.0"),
    ("ingest.path=", r"ingest: path: expected the folder \(or file\) of the dataset, found ''"),
    ("gate.registry=", r"gate: registry: expected the registry folder, found ''"),  # Path(""): the project root
    # NaN fails every comparison, so each section's range check let it through (and switched the check off)
    ("validate.class_balance_ratio=.nan", r"validate.class_balance_ratio: expected a finite number, found nan"),
    ("export.max_abs_diff=.nan", r"export.max_abs_diff: expected a finite number, found nan"),
    ("mlnt.lr=.inf", r"mlnt.lr: expected a finite number, found inf"),
    ("mlnt.lr_milestones=[1, .nan]", r"mlnt.lr_milestones\[1\]: expected a finite number, found nan"),
    # the baseline's config is TrainConfig's: its checks hold for the baseline as for mlnt
    ("baseline.lr_milestones=[15]", r"baseline: lr_milestones\[0\]: expected an epoch below epochs \(15\), found 15.0"),
    ("baseline.lr=-0.1", r"baseline: lr: expected a finite number >= 0.0, found -0.1"),
    ("validate.min_images=-3", r"validate: min_images: expected >= 0, found -3"),
    ("evaluate.workers=-1", r"evaluate: workers: expected >= 0, found -1"),
    ("evaluate.ece_bins=0", r"evaluate: ece_bins, batch_size: expected >= 1, found 0, 512"),
    ("evaluate.batch_size=0", r"evaluate: ece_bins, batch_size: expected >= 1, found 15, 0"),
])
def test_bad_values_name_the_field_expected_and_found(assignment, message):
    params = {}
    apply_override(params, assignment, SECTIONS)
    section = assignment.split(".")[0]
    with pytest.raises(ConfigError, match=message):
        build(SECTIONS[section], params[section], where=section)


@pytest.mark.parametrize(("assignment", "message"), [
    ("nois.seed=1", r"unknown section 'nois'. Valid: ingest, validate, noise, baseline, mlnt, evaluate, export"),
    ("noise.sed=1", r"unknown key 'sed' in section 'noise'. Valid: class_map, human_labels, kind, rate, seed"),
    ("noise.seed", r"expected section.key=value"),
    ("seed=1", r"expected section.key=value"),
])
def test_bad_assignments(assignment, message):
    with pytest.raises(ConfigError, match=message):
        apply_override({}, assignment, SECTIONS)


@pytest.mark.parametrize(("value", "want"), [
    ("2e-2", 0.02), ("5E-4", 0.0005), (".5", 0.5), ("010", 10.0), ("1.", 1.0)])
def test_values_read_as_yaml_1_2_as_dvc_reads_them(value, want):
    """PyYAML's YAML 1.1 read 2e-2 as a string (an error for a float) and 010 as octal 8; DVC reads params.yaml
    as YAML 1.2, so the steps do too."""
    params = {}
    apply_override(params, f"baseline.lr={value}", SECTIONS)
    assert build(SECTIONS["baseline"], params["baseline"], where="baseline").lr == want
    apply_override(params, "noise.seed=010", SECTIONS)
    apply_override(params, "ingest.path=no", SECTIONS)  # a folder named "no", not YAML 1.1's False
    assert build(SECTIONS["noise"], params["noise"], where="noise").seed == 10
    assert build(SECTIONS["ingest"], params["ingest"], where="ingest").path == "no"


def test_scalars_read_as_dvc_reads_them():
    """The steps and DVC must read params.yaml alike, or `dvc params diff` and the runs disagree (PyYAML's YAML
    1.1 read 010 as 8, 5e-4 as a string and 12_000 as 12000; a first YAML 1.2 reader refused 12_000). Dates are the
    one difference: DVC makes them dates, the steps keep them strings (no field takes a date)."""
    from dvc.utils.serialize import parse_yaml  # noqa: PLC0415 - DVC is a dev dependency here

    from components.common.config import read_yaml  # noqa: PLC0415

    for text in ("12_000", "0b101", "-0x1F", "0o17", "1_0.5", "010", "0777", "5e-4", "1.5E+3", ".5", "1.", "+4", "-3",
                 "1e5", ".inf", "-.inf", "true", "False", "no", "yes", "~", "null", "1:30", "x1", "0b2",
                 "-_1", "+_1", "._5", "-._5", ".1e5", ".1e+5", "1.e5"):  # a "_" after the sign or the point; ".1e5"
        ours, dvc = read_yaml(f"a: {text}")["a"], parse_yaml(f"a: {text}", "params.yaml")["a"]  # is DVC's string
        assert (ours, type(ours)) == (dvc, type(dvc)), text
    assert read_yaml("a: .nan")["a"] != read_yaml("a: .nan")["a"]  # NaN, as DVC's


def test_every_short_number_spelling_reads_as_dvc_reads_it():
    """Every scalar of up to three of the characters numbers are spelt with reads as DVC reads it, or fails as it
    does (``-_``: a sign and no digits; ours a YAML error naming the field, DVC's a ValueError): the int and float
    patterns once differed from ruamel's on ``-_1``, ``._5`` (strings here, numbers in DVC) and ``.1e5`` (a float
    here, a string in DVC)."""
    from dvc.utils.serialize import YAMLError, parse_yaml  # noqa: PLC0415 - DVC is a dev dependency here

    from components.common.config import read_yaml  # noqa: PLC0415

    def read(parser, text):
        try:
            value = parser(text)["a"]
        except (yaml.YAMLError, YAMLError, ValueError):
            return "error"
        return repr(value), type(value)

    differ = [text for size in (1, 2, 3) for text in map("".join, itertools.product("-+._1e", repeat=size))
              if read(read_yaml, f"a: {text}") != read(lambda t: parse_yaml(t, "params.yaml"), f"a: {text}")]
    assert differ == []


@pytest.mark.parametrize(("text", "message"), [
    ("nosie:\n  rate: 0.2\n", r"p.yaml: expected sections named after the steps \(ingest, validate, noise, "
                               r"baseline, mlnt, evaluate, export, gate\), found 'nosie'"),
    ("noise:\n  rate: 0.2\nbaseline:\n  epochs: 3\nnoise:\n  seed: 1\n",
     r"p.yaml: expected valid YAML, found a syntax error: found the key 'noise' twice in one mapping \(first at "
     r"line 1\) at line 5, column 1"),
    ("noise:\n  rate: 0.2\n  rate: 0.3\n", r"found the key 'rate' twice in one mapping \(first at line 2\)"),
], ids=["misspelt-section", "section-twice", "key-twice"])
def test_a_params_file_whose_sections_no_step_reads_is_refused(tmp_path, text, message):
    """A misspelt section was ignored by every step (each reads its own, defaults for a missing one), and a section
    or key given twice kept only the last (YAML 1.1); DVC's own loader refuses the latter."""
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_params(path)


def test_help_says_when_the_params_give_no_valid_values(capsys):
    """--help said "the value recipes/clothing1m.yaml with --set gives" over the code's defaults when an override
    was invalid."""
    with pytest.raises(SystemExit):
        parse(["--params", str(ROOT / "recipes/clothing1m.yaml"), "--set", "noise.rate=2", "--help"], "noise",
              {"noise": noise.NoiseConfig}, "")
    assert ("not valid, so the code's defaults are shown instead: noise: rate: expected a number in [0, 1], found "
            "2.0") in capsys.readouterr().out


def test_unknown_key_in_the_params_file(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("noise:\n  rate: 0.1\n  colour: red\n")
    with pytest.raises(ConfigError, match=r"p.yaml: noise: unknown key\(s\) colour. Valid: class_map, human_labels"):
        parse(["--params", str(path)], "noise", {"noise": noise.NoiseConfig}, "")


def _with(sections: dict, tmp_path: Path) -> Path:
    """params.yaml with ``sections``' keys over its own, written to ``tmp_path / "p.yaml"``."""
    params = load_params(ROOT / "params.yaml")
    for section, values in sections.items():
        params[section].update(values)
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.mark.parametrize(("sections", "message"), [
    ({"gate": {"min_acuracy": 0.7}}, r"p.yaml: gate: unknown key\(s\) min_acuracy. Valid: max_below_baseline, "
                                     r"max_regression, min_accuracy, registry"),
    ({"mlnt": {"neighbours": 40, "batch_size": 32}},
     r"p.yaml: mlnt: neighbours: expected fewer than batch_size \(32\), found 40"),
    ({"ingest": {"dataset": "mnist"}}, r"p.yaml: ingest.dataset: expected one of 'fashion-mnist'"),
], ids=["gate-typo", "mlnt-value", "ingest-choice"])
def test_a_later_sections_mistake_fails_every_step_up_front(tmp_path, capsys, sections, message):
    """``dvc repro`` runs ingest, validate, noise and baseline (hours with the Clothing1M recipe) before the step
    whose section has the typo: each step checks every section of the params file, so the first one fails."""
    path = _with(sections, tmp_path)
    with pytest.raises(ConfigError, match=message):
        parse(["--params", str(path)], "noise", {"noise": noise.NoiseConfig}, "")
    assert noise.main(["--params", str(path), "--set", "noise.seed=1"]) == 2
    assert re.fullmatch(rf"error: noise: {re.escape(str(path))} with --set overrides: {message[len('p.yaml: '):]}.*\n",
                        capsys.readouterr().err)
    with pytest.raises(SystemExit) as exit_:  # --help still lists the step's parameters
        noise.main(["--params", str(path), "--help"])
    assert exit_.value.code == 0 and "  noise.rate: float = 0.5" in capsys.readouterr().out


def test_every_step_checks_the_other_sections_the_ingest_folder_not_read(tmp_path):
    """The ingest folder is ingest's to read: another step builds the section (a path that is no folder here, a
    pipeline's or another machine's, is no error), and returns its own configs alone, the file's sections as given."""
    path = _with({"ingest": {"path": str(tmp_path / "elsewhere")}}, tmp_path)
    configs, params = parse(["--params", str(path)], "gate", {"gate": gate.GateConfig}, "")
    assert configs == {"gate": gate.GateConfig()} and params == load_params(path)


def test_missing_or_malformed_params_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nope.yaml: expected a params file, found none"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("noise: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: expected valid YAML, found a syntax error"):
        load_params(bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: expected a mapping of sections to mappings, found list"):
        load_params(bad)


def test_help_lists_every_parameter_with_the_value_that_will_run_and_the_default(capsys, monkeypatch):
    """The value params.yaml (and --set) give, which is what runs; the dataclass default beside it where it
    differs (--help once printed only the defaults, e.g. ramp_end 7.0 where params.yaml ran 10.0)."""
    monkeypatch.chdir(ROOT)
    params = load_params(ROOT / "params.yaml")["mlnt"]
    with pytest.raises(SystemExit) as exit_:
        mlnt.main(["--help", "--set", "mlnt.epochs=4"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "the value params.yaml with --set gives" in out
    for f in dataclasses.fields(mlnt.MlntStepConfig):
        value = 4 if f.name == "epochs" else build(mlnt.MlntStepConfig, params, where="mlnt").__dict__[f.name]
        line = f"  mlnt.{f.name}: "
        shown = next(row for row in out.splitlines() if row.startswith(line))
        written = shown.split(" = ", 1)[1].split("  (default")[0]  # as one writes it in params.yaml or --set
        assert build(mlnt.MlntStepConfig, {f.name: yaml.safe_load(written)}, where="mlnt").__dict__[f.name] == value
        assert ("(default" in shown) == (value != f.default), shown
    epochs = next(row for row in out.splitlines() if row.startswith("  mlnt.epochs: "))
    assert epochs == "  mlnt.epochs: int = 4  (default 15)"  # --set gives 4; params.yaml holds the defaults
    assert "--params" in out and "--set SECTION.KEY=VALUE" in out
    assert "  mlnt.amp: bool = true" in out.splitlines()  # YAML's true, not Python's True


def test_help_writes_lists_as_yaml_lists(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit):
        noise.main(["--help"])
    assert "  noise.class_map: list[str] = []" in capsys.readouterr().out.splitlines()  # not Python's tuple, ()


def test_cli_errors_are_one_line_without_traceback(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text("noise:\n  rate: 0.5\n")
    main = cli("noise", {"noise": noise.NoiseConfig}, "", lambda configs: None)
    assert main(["--params", str(params), "--set", "noise.rate=2"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (f"error: noise: {params} with --set overrides: noise: rate: expected a number in "
                           "[0, 1], found 2.0")
    with pytest.raises(ConfigError):
        main(["--params", str(params), "--set", "noise.rate=2", "--debug"])


def _failing_validate(message: str, failures: int):
    """validate's command line with a body that fails as its suite does: ``ValidationFailedError`` with ``message``
    and ``failures`` entries."""

    def body(_configs):
        raise validate.ValidationFailedError(message, [{"column": "c"}] * failures)

    return cli("validate", {}, "", body)


def test_failed_expectations_print_one_line_each_every_line_escaped(capsys):
    """validate's docstring: one line per failure, not one line with literal \\n; a control character in a value
    from the data is escaped on its line."""
    message = ("2 expectation(s) failed on artifacts/ingest:\n"
               "expect_column_values_to_be_between column=share expected={'max_value': 0.5} observed=0.9\n"
               "expect_column_values_to_match_regex column=path expected={} observed='a\rb\x1b[2K\u2028'")
    assert _failing_validate(message, failures=2)([]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "error: validate: 2 expectation(s) failed on artifacts/ingest:",
        "error: validate: expect_column_values_to_be_between column=share expected={'max_value': 0.5} observed=0.9",
        "error: validate: expect_column_values_to_match_regex column=path expected={} observed='a\\rb\\x1b[2K"
        "\\u2028'"]


def test_a_line_break_inside_a_failure_keeps_the_error_on_one_line(capsys):
    """More lines than failures: a value from the data broke a line, which must not start a line of its own."""
    message = "1 expectation(s) failed on x:\nexpect_x column=path observed='a.png\nINFO components.gate: PASS'"
    assert _failing_validate(message, failures=1)([]) == 1
    err = capsys.readouterr().err
    assert err == ("error: validate: 1 expectation(s) failed on x:\\nexpect_x column=path observed='a.png\\nINFO "
                   "components.gate: PASS'\n")


def test_one_word_names_each_step_in_dvc_yaml_params_and_modules():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert list(stages) == list(SECTIONS)  # also the order in which they run
    for name, stage in stages.items():
        assert stage["cmd"] == f"python -m components.{name}"
        # export's card records the settings of every step up to it, so it depends on all of them
        assert stage["params"] == (list(SECTIONS)[:list(SECTIONS).index("export") + 1] if name == "export" else [name])
        outputs = [next(iter(o)) if isinstance(o, dict) else o
                   for key in ("outs", "metrics") for o in stage.get(key, [])]
        assert all(o.startswith(f"artifacts/{name}") for o in outputs), outputs


@pytest.mark.parametrize(("cls", "field", "bad"), [
    (ingest.IngestConfig, "dataset", "cifar-10"), (ingest.IngestConfig, "channels", 2),
    (noise.NoiseConfig, "kind", "symetric"), (noise.NoiseConfig, "human_labels", "aggregate"),
    (baseline.BaselineConfig, "network", "resnet18"), (baseline.BaselineConfig, "device", "gpu"),
    (mlnt.MlntStepConfig, "mode", "second_order")])
def test_choices_are_typed_and_a_wrong_one_names_the_valid_ones(cls, field, bad):
    hint = typing.get_type_hints(cls)[field]
    assert typing.get_origin(hint) is typing.Literal
    with pytest.raises(ConfigError) as caught:
        build(cls, {field: bad}, where="section")
    assert str(caught.value) == (f"section.{field}: expected one of {', '.join(map(repr, typing.get_args(hint)))}, "
                                 f"found {bad!r}")


def test_a_baseline_config_built_in_python_refuses_an_unknown_network():
    """``BaselineConfig`` used as a library (not through params.yaml's typed build) names the valid networks."""
    with pytest.raises(ValueError, match=r"Unknown network 'resnet18'. Valid: small_cnn, preact_resnet32, resnet50"):
        baseline.BaselineConfig(network="resnet18")


def _log_in_a_fresh_process(setup: str) -> subprocess.CompletedProcess:
    """A fresh Python (a root logger without handlers, as a step's process starts) that runs ``setup``, then logs a
    message echoing a forged line from the data at INFO through a ``components`` logger."""
    code = ("import logging, sys\nfrom components.common.config import configure_logging\n" + setup +
            "\nlogging.getLogger('components.ingest').info('read %s', 'cat.png\\nERROR components.gate: passed')")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)


def test_configure_logging_escapes_a_newline_in_a_logged_message():
    """As a step's command line sets up: one handler to stderr in LOG_FORMAT; the data cannot start a log line."""
    done = _log_in_a_fresh_process("configure_logging()\nconfigure_logging()")  # idempotent: one handler
    assert done.stderr == "INFO components.ingest: read cat.png\\nERROR components.gate: passed\n"


def test_configure_logging_takes_over_a_configured_root_keeping_its_format():
    """A KFP step: the executor has called logging.basicConfig before the body; taken over, its handler keeps the
    executor's format and level and escapes the message, and a traceback keeps its lines."""
    kfp = "logging.basicConfig(stream=sys.stdout, format='[KFP %(levelname)s]: %(message)s', level=logging.INFO)"
    left = _log_in_a_fresh_process(f"{kfp}\nconfigure_logging()")  # the command line's rule: leave it as it is
    assert left.stdout.splitlines() == ["[KFP INFO]: read cat.png", "ERROR components.gate: passed"]
    taken = _log_in_a_fresh_process(f"{kfp}\nconfigure_logging(take_over=True)\nconfigure_logging(take_over=True)\n"
                                    "try:\n    1 / 0\nexcept ZeroDivisionError:\n"
                                    "    logging.getLogger('components.x').exception('a\\rb')")
    lines = taken.stdout.splitlines()
    assert lines[0] == "[KFP ERROR]: a\\rb" and lines[1] == "Traceback (most recent call last):"
    assert lines[-2:] == ["ZeroDivisionError: division by zero",
                          "[KFP INFO]: read cat.png\\nERROR components.gate: passed"]


def test_a_date_stays_a_string_and_a_params_file_of_comments_alone_is_no_section(tmp_path):
    """docs/architecture.md: params are read as YAML 1.2 except that a date stays a string (YAML 1.1's timestamp
    made 2026-01-01 a ``datetime.date``); a file of comments alone gives every step its defaults."""
    from components.common.config import read_yaml  # noqa: PLC0415

    assert read_yaml("a: 2026-01-01\nb: 2026-01-01 10:00:00")["a"] == "2026-01-01"
    assert read_yaml("b: 2026-01-01 10:00:00")["b"] == "2026-01-01 10:00:00"
    assert read_yaml("a:")["a"] is None  # an empty value is null, as DVC reads it
    path = tmp_path / "p.yaml"
    path.write_text("# every step at its defaults\n")
    assert load_params(path) == {}
    configs, _ = parse(["--params", str(path)], "noise", {"noise": noise.NoiseConfig}, "")
    assert configs["noise"] == noise.NoiseConfig()


def test_a_steps_command_line_logs_the_components_at_info_and_the_rest_at_warning():
    """A step's ``main`` sets up the logging itself (``configure_logging``): the components' INFO lines reach stderr,
    another library's INFO does not (the root stays at WARNING), and a forged line from the data stays escaped."""
    done = _log_in_a_fresh_process(
        "from components.common.config import cli\n"
        "main = cli('noise', {}, '', lambda configs: logging.getLogger('chatty').info('not shown'))\n"
        "assert main([]) == 0")
    assert done.stderr == "INFO components.ingest: read cat.png\\nERROR components.gate: passed\n"


def test_every_set_override_applies_not_only_the_last(tmp_path):
    """``--set`` is repeatable: each one changes its key."""
    (tmp_path / "p.yaml").write_text("noise:\n  rate: 0.1\n")
    configs, params = parse(["--params", str(tmp_path / "p.yaml"), "--set", "noise.rate=0.3", "--set", "noise.seed=7"],
                            "noise", {"noise": noise.NoiseConfig}, "")
    assert (configs["noise"].rate, configs["noise"].seed) == (0.3, 7)
    assert params == {"noise": {"rate": 0.3, "seed": 7}}


def test_help_without_a_readable_params_file_lists_the_code_defaults(tmp_path, capsys):
    """--help still answers when --params names no file: the parameters with the code's defaults and why."""
    main = cli("noise", {"noise": noise.NoiseConfig}, "", lambda configs: None)
    with pytest.raises(SystemExit) as exit_:
        main(["--params", str(tmp_path / "nope.yaml"), "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "not valid, so the code's defaults are shown instead: " in out and "nope.yaml: expected a params file" in out
    assert f"  noise.rate: float = {noise.NoiseConfig().rate!r}\n" in out


def test_debug_on_the_real_command_line_shows_the_traceback(tmp_path, monkeypatch):
    """``main()`` with no argv (``python -m components.<step>``) reads --debug from ``sys.argv``."""
    main = cli("noise", {"noise": noise.NoiseConfig}, "", lambda configs: None)
    monkeypatch.setattr(sys, "argv", ["noise", "--params", str(tmp_path / "nope.yaml"), "--debug"])
    with pytest.raises(ConfigError, match=r"nope\.yaml: expected a params file"):
        main()
    monkeypatch.setattr(sys, "argv", ["noise", "--params", str(tmp_path / "nope.yaml")])
    assert main() == 2



@pytest.mark.parametrize("error", [PermissionError(13, "Permission denied", "artifacts/noise"), TypeError("t"),
                                   RuntimeError("r"), ValueError("v")], ids=lambda e: type(e).__name__)
def test_a_failure_that_is_no_config_error_is_one_line_and_exit_1(error, capsys):
    """docs/architecture.md: errors print one line and exit non-zero (2 for a config error, 1 otherwise)."""
    def body(_configs):
        raise error

    assert cli("noise", {"noise": noise.NoiseConfig}, "", body)(["--params", str(ROOT / "params.yaml")]) == 1
    assert capsys.readouterr().err == f"error: noise: {error}\n"


def test_a_merge_key_merges_as_dvc_reads_it_and_an_own_key_overrides_a_merged_one(tmp_path):
    """``mlnt: {<<: *train, mode: head}`` was a syntax error ("could not determine a constructor for the tag
    'tag:yaml.org,2002:merge'") though DVC reads it. A key of the mapping itself overrides a merged one (plain YAML),
    the first of the mappings merged wins, and a merged mapping's own key beats its own merges, as in DVC."""
    from dvc.utils.serialize import parse_yaml  # noqa: PLC0415 - DVC is a dev dependency here

    from components.common.config import read_yaml  # noqa: PLC0415

    text = ("baseline: &train\n  epochs: 3\n  seed: 1\nmlnt: {<<: *train, seed: 2, mode: head}\n"
            "noise: &a {rate: 0.1, seed: 5, <<: {rate: 0.9, kind: none}}\n"
            "gate: {<<: [*a, {seed: 6, train_size: 7}], min_accuracy: 0.5}\n")
    assert read_yaml(text) == parse_yaml(text, "p.yaml")
    path = tmp_path / "p.yaml"
    path.write_text(text)
    params = load_params(path)
    assert params["mlnt"] == {"epochs": 3, "seed": 2, "mode": "head"}
    assert params["noise"] == {"rate": 0.1, "seed": 5, "kind": "none"}
    assert params["gate"] == {"rate": 0.1, "seed": 5, "kind": "none", "train_size": 7, "min_accuracy": 0.5}


@pytest.mark.parametrize(("text", "message"), [
    ("baseline: &t {seed: 1}\nmlnt: {<<: *t, seed: 2, seed: 3}\n", r"found the key 'seed' twice in one mapping "
                                                                   r"\(first at line 2\) at line 2, column 25"),
    ("baseline: &t {seed: 1}\nmlnt:\n  <<: *t\n  <<: {epochs: 2}\n", r"found the key << twice in one mapping"),
    ("baseline: &t [1]\nmlnt: {<<: *t}\n", r"expected a mapping or a list of mappings to merge, found scalar"),
], ids=["key-twice-after-a-merge", "merge-twice", "merge-no-mapping"])
def test_a_key_twice_is_refused_with_merge_keys_too(tmp_path, text, message):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"p.yaml: expected valid YAML, found a syntax error: " + message):
        load_params(path)


@pytest.mark.parametrize(("key", "shown"), [("1", "1 (int)"), ("~", "None (NoneType)"), ("true", "True (bool)")])
def test_a_key_that_is_no_string_is_an_unknown_key_and_help_still_answers(tmp_path, capsys, key, shown):
    """``noise: {1: 2}`` sorted an int among the field names: a TypeError (exit 1), and --help failed with it."""
    path = tmp_path / "p.yaml"
    path.write_text(f"noise:\n  rate: 0.1\n  {key}: 2\n  colour: red\n")
    main = cli("noise", {"noise": noise.NoiseConfig}, "", lambda configs: None)
    assert main(["--params", str(path)]) == 2
    assert capsys.readouterr().err == (f"error: noise: {path}: noise: unknown key(s) {shown}, colour. Valid: "
                                       f"class_map, human_labels, kind, rate, seed, train_size, val_clean, "
                                       f"val_fraction\n")
    with pytest.raises(SystemExit) as exit_:
        main(["--params", str(path), "--help"])
    assert exit_.value.code == 0 and f"noise: unknown key(s) {shown}, colour" in capsys.readouterr().out


@pytest.mark.parametrize("number", ["0x_", "0b_", "0o_", "-0x__", "+0o_"])
def test_a_number_prefix_without_digits_is_a_config_error_naming_the_field(tmp_path, capsys, number):
    """``seed: 0x_`` matched the core schema's int pattern, and ``int('', 16)`` raised a bare ValueError: exit 1,
    naming neither the field nor the file (DVC's reader fails on it too)."""
    path = tmp_path / "p.yaml"
    path.write_text(f"noise:\n  seed: {number}\nmlnt:\n  lr_milestones: [1, {number}]\n")
    with pytest.raises(ConfigError, match=rf"p.yaml: expected valid YAML, found a syntax error: noise.seed: expected "
                                          rf"a number, found '{re.escape(number)}', a prefix without digits at line 2, "
                                          rf"column 9"):
        load_params(path)
    path.write_text(f"mlnt:\n  lr_milestones: [1, {number}]\n")
    with pytest.raises(ConfigError, match=r"mlnt.lr_milestones\[1\]: expected a number"):
        load_params(path)
    with pytest.raises(ConfigError, match=rf"--set 'noise.seed={re.escape(number)}': expected a YAML value"):
        apply_override({}, f"noise.seed={number}", SECTIONS)
    main = cli("noise", {"noise": noise.NoiseConfig}, "", lambda configs: None)
    assert main(["--params", str(ROOT / "params.yaml"), "--set", f"noise.seed={number}"]) == 2
    assert capsys.readouterr().err.startswith("error: noise: --set 'noise.seed=")


@pytest.mark.parametrize(("value", "dropped"), [
    ("data/run #1", "#1"), ("#1", "#1"), ("data/run  # note", "# note"), ('"data/run" # note', "# note")])
def test_a_set_value_with_a_yaml_comment_is_refused_unless_quoted(value, dropped):
    """``--set "ingest.path=data/run #1"`` gave ``data/run``: YAML dropped the rest as a comment, without a word."""
    with pytest.raises(ConfigError, match=rf"--set 'ingest.path=.*': expected a value without a YAML comment, found "
                                          rf".*, of which YAML drops '{dropped}' as a comment; quote the string that "
                                          rf"holds the '#'"):
        apply_override({}, f"ingest.path={value}", SECTIONS)
    with pytest.raises(ConfigError, match=r"""as in --set 'ingest.path="data/run #1"'$"""):
        apply_override({}, "ingest.path=data/run #1", SECTIONS)
    params = {}
    for assignment in ('ingest.path="data/run #1"', "ingest.path='data/run #1'", "ingest.path=data/run#1"):
        apply_override(params, assignment, SECTIONS)
        assert params["ingest"]["path"] == assignment.split("=", 1)[1].strip("'\"")
    apply_override(params, 'noise.class_map=[cat->dog, "a #b->c"]', SECTIONS)
    assert params["noise"]["class_map"] == ["cat->dog", "a #b->c"]


def test_an_abbreviated_option_is_refused_not_read_otherwise_than_written(tmp_path, capsys):
    """``--deb`` was accepted by argparse as --debug, but ``cli`` looks for the literal "--debug" to decide on the
    traceback: the abbreviation ran without it. Abbreviations are refused (``--par`` too), as argparse's usage."""
    main = cli("noise", {"noise": noise.NoiseConfig}, "", lambda configs: None)
    for argv in (["--params", str(tmp_path / "nope.yaml"), "--deb"], ["--par", str(ROOT / "params.yaml")]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
        assert f"unrecognized arguments: {argv[-1] if argv[-1] == '--deb' else ' '.join(argv)}" in \
            capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"nope\.yaml: expected a params file"):
        main(["--params", str(tmp_path / "nope.yaml"), "--debug"])
