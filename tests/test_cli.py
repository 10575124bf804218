"""Flag checking, and the mistakes a user makes on a first run: each ends in one line, within
seconds, before any image is decoded, also under `accelerate launch`."""
import json
import os
import subprocess
import sys
import time

import pytest
import yaml

from conftest import ROOT, write_tiny_pacs
from dann import first_look
from dann.config import TrainConfig, make_config, parse_config


@pytest.mark.parametrize("argv, message", [
    (["--lr", "0"], "--lr must be > 0"),
    (["--lr", "-0.1"], "--lr must be > 0"),
    (["--lr", "nan"], "--lr must be a finite number, got nan"),
    (["--alpha", "inf"], "--alpha must be a finite number"),
    (["--batch_size", "0"], "--batch_size must be > 0"),
    (["--alpha", "-1"], "--alpha must be >= 0"),
    (["--alpha_schedule", "linear"], "invalid choice: 'linear'"),
    (["--report_to", "mlflow"], "invalid choice: 'mlflow'"),
    (["--epochs", "ten"], "invalid int value: 'ten'"),
    (["--method", "baseline"], "train_baseline.py"),
    (["--backbone", "vgg"], "invalid choice: 'vgg'"),
    (["--backbone", "resnet"], "invalid choice: 'resnet'"),
    (["--cpu=maybe"], "expected true or false, got 'maybe'"),
    (["--target", "a,a"], "lists a domain twice"),
    (["--clip_grad", "-1"], "--clip_grad must be >= 0"),
    (["--method", "pseudo_labels", "--pl_threshold", "2"], "--pl_threshold must be between 0 and 1"),
    (["--method", "fixmatch", "--fixmatch_shift", "0.6"], "--fixmatch_shift must be between 0 and 0.5, got 0.6"),
    (["--dsn_recon", "0.1"], "--dsn_recon is a flag of --method dsn, not of this run's --method dann"),
    (["--method", "mcc", "--alpha", "1"], "--alpha is a flag of --method dann or --method cdan or --method dsn"),
    (["--method", "mcc", "--discriminator_width", "8"], "--method mcc has no domain discriminator"),
    (["--discriminator", "copy", "--discriminator_width", "8"],
     "--discriminator_width is a flag of --discriminator bn_mlp"),
    (["--no_such_flag", "1"], "unknown flag --no_such_flag"),
])
def test_bad_flag_values_are_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        parse_config("dann", argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert err.startswith("error: ") and err.count("\n") == 1 and err.rstrip().endswith("see train_dann.py --help")


def test_each_plugin_flag_reaches_its_hparams():
    config = parse_config("dann", ["--method", "cdan", "--alpha", "0.5", "--entropy_conditioning",
                                   "--mcc_weight", "1", "--backbone", "lenet_bn", "--bottleneck_dim", "64",
                                   "--discriminator", "bn_mlp", "--discriminator_width", "32"])
    assert (config.method_hp.alpha, config.method_hp.entropy_conditioning, config.method_hp.mcc_weight) == \
        (0.5, True, 1.0)
    assert config.backbone_hp.bottleneck_dim == 64 and config.discriminator_hp.discriminator_width == 32
    flat = config.flat()  # results.json, the trackers and checkpoints see every flag by name
    assert (flat["alpha"], flat["bottleneck_dim"], flat["discriminator_width"], flat["lr"]) == (0.5, 64, 32, 1e-3)
    assert "dsn_recon" not in flat and "method_hp" not in flat
    assert config == make_config(**{k: v for k, v in flat.items()})
    with pytest.raises(ValueError, match="--dsn_recon is a flag of --method dsn"):
        make_config(method="dann", dsn_recon=1.0)


def test_the_settings_are_read_only():
    config = parse_config("dann", [])
    with pytest.raises(AttributeError):
        config.lr = 1.0


def test_each_script_offers_the_methods_it_accepts():
    from dann.config import get_args_parser

    dann_help = get_args_parser("dann").format_help()
    methods = "{dann,cdan,dsn,mcc,adabn,pseudo_labels,mdd,mcd,dan,coral,fixmatch,shot}"
    assert methods in dann_help and "baseline" not in dann_help.split("--method")[1][:40]
    baseline_help = get_args_parser("baseline").format_help()
    assert "--method" not in baseline_help and "--alpha" not in baseline_help and "--train_on" in baseline_help
    assert "(default: )" not in dann_help and "{,no" not in dann_help
    assert "--dsn_recon" in get_args_parser("dann", method="dsn").format_help()


def test_flags_map_onto_the_config():
    config = parse_config("dann", ["--lr", "0.01", "--alpha", "0.5", "--augment", "--target", "sketch",
                                   "--method", "cdan", "--backbone", "resnet18", "--discriminator", "paper"])
    assert (config.lr, config.method_hp.alpha, config.augment, config.target) == (0.01, 0.5, True, "sketch")
    assert (config.method, config.backbone, config.discriminator) == ("cdan", "resnet18", "paper")
    assert parse_config("dann", []) == TrainConfig()


# What the table's chosen DANN row (sweeps/tables/digits.yaml, --first_look's dann recipe) sets
# beyond the data and budget: the defaults must be it (docs/RESULTS.md).
CHOSEN = ("lr_schedule", "nesterov", "weight_decay", "alpha", "alpha_schedule", "alpha_warmup_steps", "discriminator",
          "discriminator_width", "domain_loss_reduction", "domain_batches", "classify_target")


def test_the_defaults_are_the_tables_chosen_dann_and_the_homework_is_one_flag():
    first_look_dann = first_look.recipe("dann")
    defaults = parse_config("dann", []).flat()
    assert {k: defaults[k] for k in CHOSEN} == {k: first_look_dann[k] for k in CHOSEN}
    homework = parse_config("dann", ["--recipe", "homework"])
    assert (homework.lr_schedule, homework.nesterov, homework.weight_decay, homework.discriminator) == \
        ("step", False, 5e-5, "copy")
    assert (homework.method_hp.alpha, homework.method_hp.alpha_schedule, homework.method_hp.domain_loss_reduction,
            homework.method_hp.classify_target) == (0.1, "constant", "sum", False)
    assert make_config(recipe="homework") == homework  # the parser and the programmatic path agree
    # flags given override the recipe; it sets only the flags a run takes
    assert parse_config("dann", ["--recipe", "homework", "--alpha", "0.5"]).method_hp.alpha == 0.5
    mcc = parse_config("dann", ["--recipe", "homework", "--method", "mcc"])
    assert (mcc.lr_schedule, mcc.nesterov, mcc.weight_decay) == ("step", False, 5e-5)
    assert parse_config("baseline", ["--recipe=homework"]).lr_schedule == "step"
    # the homework's grids train the homework's model
    grid = yaml.safe_load((ROOT / "sweeps" / "3B_dann_photo_art.yaml").read_text())["parameters"]
    point = parse_config("dann", [f"--{k}={v.get('value', (v.get('values') or [None])[0])}" for k, v in grid.items()])
    assert (point.discriminator, point.lr_schedule, point.method_hp.domain_loss_reduction) == ("copy", "step", "sum")


def test_on_the_digits_network_dann_cdan_and_mcc_default_to_the_tables_bottleneck():
    def bottleneck(script, *argv):
        return parse_config(script, list(argv)).backbone_hp.bottleneck_dim

    for method in ("dann", "cdan", "mcc"):  # their chosen rows in sweeps/tables/digits.yaml (stage 7)
        assert bottleneck("dann", "--backbone", "lenet_bn", "--method", method) == 256
        assert first_look.RECIPES[method]["bottleneck_dim"] == 256
    lenet_bn = parse_config("dann", ["--backbone", "lenet_bn"]).flat()
    assert {k: lenet_bn[k] for k in (*CHOSEN, "bottleneck_dim")} == \
        {k: first_look.recipe("dann")[k] for k in (*CHOSEN, "bottleneck_dim")}
    assert make_config(backbone="lenet_bn").backbone_hp.bottleneck_dim == 256  # the programmatic path agrees
    # the table's source-only row has none, nor the methods it never measured with one
    assert bottleneck("baseline", "--backbone", "lenet_bn") == 0
    assert bottleneck("dann", "--backbone", "lenet_bn", "--method", "dsn") == 0
    # other backbones keep their own G_y (AlexNet its pretrained fc6-fc7); so does the homework's recipe
    assert bottleneck("dann") == bottleneck("dann", "--backbone", "lenet") == 0
    assert bottleneck("dann", "--backbone", "resnet18") == 0
    assert bottleneck("dann", "--backbone", "lenet_bn", "--recipe", "homework") == 0
    assert bottleneck("dann", "--backbone", "lenet_bn", "--bottleneck_dim", "0") == 0  # a flag given wins


def test_boolean_flags_take_the_form_wandb_writes():
    config = parse_config("dann", ["--augment=true", "--tsne=False", "--cpu", "--no-compile"])
    assert (config.augment, config.tsne, config.cpu, config.compile) == (True, False, True, False)


def test_baseline_flags():
    config = parse_config("baseline", ["--train_on", "target", "--target", "photo"])
    assert config.train_on == "target" and config.method == "baseline"
    with pytest.raises(SystemExit):
        parse_config("baseline", ["--alpha", "0.1"])  # no G_d, no alpha
    with pytest.raises(SystemExit):
        parse_config("dann", ["--train_on", "target"])


def run_script(*args, launcher=(sys.executable,), cwd=ROOT, **env):
    start = time.time()
    result = subprocess.run([*launcher, *args], cwd=cwd, capture_output=True, text=True,
                            env={**os.environ, **env}, timeout=300)
    return result, time.time() - start


def one_error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 1 and len(lines) == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return lines[0]


@pytest.mark.slow
def test_first_run_mistakes_are_one_line_before_any_decoding(tmp_path):
    data = write_tiny_pacs(tmp_path / "PACS", size=80)  # photo-sized: decoded to 256x256, as PACS
    cache = tmp_path / "cache"
    common = ["--cpu", "--pretrained", "none", "--cache_dir", str(cache), "--output_dir", str(tmp_path / "out")]
    # A mistyped --data_root is not downloaded: it does not exist, says so at once.
    error = one_error_line(run_script(ROOT / "train_dann.py", *common, "--data_root", str(tmp_path / "PAC"))[0])
    assert f"--data_root {tmp_path / 'PAC'}: no such folder" in error and "--download" in error
    # An unknown domain lists the choices.
    error = one_error_line(run_script(ROOT / "train_dann.py", *common, "--data_root", str(data),
                                      "--target", "clipart")[0])
    assert "unknown domain 'clipart'" in error and "photo, art_painting, cartoon, sketch" in error
    # A missing weights file, and a backbone that cannot take the images.
    for flags, message in [(["--pretrained", str(tmp_path / "nope.pth")], "no such file"),
                           (["--backbone", "lenet"], "lenet takes 32x32 inputs")]:
        error = one_error_line(run_script(ROOT / "train_dann.py", *common, "--data_root", str(data), *flags)[0])
        assert message in error, error
    assert not cache.exists() or not any(cache.iterdir())  # nothing was decoded (the folder may be made)


@pytest.mark.slow
def test_default_data_folder_offline_fails_in_seconds(tmp_path):
    """The default folder is missing, so PACS would be downloaded: the Hub is unreachable (a
    proxy on a closed port), which is one line within seconds, not minutes of retries."""
    result, seconds = run_script(ROOT / "train_dann.py", "--cpu", "--pretrained", "none", cwd=tmp_path,
                                 https_proxy="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"))
    error = one_error_line(result)
    assert "cannot download PACS (flwrlabs/pacs)" in error and "--data_root" in error
    assert seconds < 30 and not (tmp_path / "data" / "PACS").exists()


@pytest.mark.slow
def test_accelerate_launch_quiet_gives_the_one_line_only(tmp_path):
    launcher = (sys.executable, "-m", "accelerate.commands.launch", "--quiet",
                "--config_file", str(ROOT / "accelerate_config.yaml"))
    result, _ = run_script(str(ROOT / "train_dann.py"), "--cpu", "--data_root", str(tmp_path / "missing"),
                           launcher=launcher)
    assert "no such folder" in one_error_line(result)
    assert "CalledProcessError" not in result.stderr


def test_help_and_flag_errors_load_no_torch():
    """--help answers in a fraction of a second: parsing imports neither torch nor accelerate."""
    probe = ("import runpy, sys\n"
             "sys.argv = ['train_dann.py'] + sys.argv[1:]\n"
             "try:\n    runpy.run_path('train_dann.py', run_name='__main__')\n"
             "except SystemExit as e:\n    code = e.code\n"
             "print(code, 'torch' in sys.modules, 'accelerate' in sys.modules)")
    for argv, code in (["--help"], "0"), (["--method", "cdan", "--help"], "0"), (["--lr", "-1"], "2"):
        result = subprocess.run([sys.executable, "-c", probe, *argv], cwd=ROOT, capture_output=True, text=True,
                                timeout=60)
        assert result.stdout.splitlines()[-1] == f"{code} False False", (argv, result.stdout[-500:], result.stderr)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator setting (elsewhere a no-op)")
def test_the_scripts_map_big_blocks_of_their_own_and_return_them():
    """After a 16 MB block is freed, glibc serves an 8 MB one from its heap, which freed
    batches fragment (it grew a CPU run's peak by 0.75 GB); return_freed_memory gives such a
    block a mapping of its own, unmapped when freed."""
    probe = ("import ctypes, sys\n"
             "from dann.cli import return_freed_memory\n"
             "libc = ctypes.CDLL('libc.so.6'); libc.malloc.restype = ctypes.c_void_p\n"
             "libc.free.argtypes = [ctypes.c_void_p]\n"
             "if sys.argv[1] == 'on':\n    return_freed_memory()\n"
             "libc.free(libc.malloc(16 << 20))\n"
             "block = libc.malloc(8 << 20)\n"
             "heap = next(line.split()[0] for line in open('/proc/self/maps') if line.rstrip().endswith('[heap]'))\n"
             "low, high = (int(a, 16) for a in heap.split('-'))\n"
             "print('heap' if low <= block < high else 'own mapping')")
    where = {mode: subprocess.run([sys.executable, "-c", probe, mode], cwd=ROOT, capture_output=True, text=True,
                                  timeout=60).stdout.strip() for mode in ("off", "on")}
    assert where == {"off": "heap", "on": "own mapping"}


@pytest.mark.slow
def test_every_report_to_without_an_output_dir(tmp_path):
    """The default run folder is chosen before the Accelerator exists, so a tracker that needs a
    logging folder (tensorboard) has one; each run leaves its folder and no lock behind."""
    from train_helpers import QUICK, TINY_TRAIN, clean_env

    data = write_tiny_pacs(tmp_path / "PACS")
    env = clean_env(tmp_path, WANDB_MODE="offline")
    for tracker in ("none", "tensorboard", "wandb", "all"):
        cwd = tmp_path / tracker
        cwd.mkdir()
        result = subprocess.run([sys.executable, str(TINY_TRAIN), "dann", *QUICK, "--data_root", str(data),
                                 "--cache_dir", str(tmp_path / "cache"), "--report_to", tracker],
                                cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, (tracker, result.stderr[-2000:])
        run_dir, = (cwd / "runs").iterdir()
        assert (run_dir / "results.json").is_file() and not (run_dir / ".lock").exists()
        if tracker in ("tensorboard", "all"):
            assert list(run_dir.rglob("events.out.tfevents.*")), tracker
        if tracker in ("wandb", "all"):
            assert list((run_dir / "wandb").glob("offline-run-*")), tracker


@pytest.mark.slow
def test_a_failed_run_leaves_no_folder_and_a_quick_check_stays_quick(tmp_path):
    from train_helpers import QUICK, TINY_TRAIN, clean_env

    data = write_tiny_pacs(tmp_path / "PACS", per_class=40)  # 80 images per domain
    env = clean_env(tmp_path)
    out = tmp_path / "failed"
    # A weights file of the wrong network: refused after the folder was locked, before anything was written.
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not weights")
    command = [sys.executable, str(TINY_TRAIN), "dann", *QUICK, "--data_root", str(data), "--cache_dir",
               str(tmp_path / "cache"), "--output_dir", str(out)]
    result = subprocess.run([*command, "--backbone", "alexnet", "--pretrained", str(bad)], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "not a loadable state dict" in result.stderr
    assert not out.exists()
    # --max_steps: the evaluation is bounded (1 step x 4 images), no t-SNE, no weights unless asked.
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert results["num_target_eval"] == 4 and results["num_source_eval"] == 4
    assert sorted(p.name for p in out.iterdir()) == ["confusion_matrix.png", "results.json"]
    assert results["config"]["tsne"] is False and results["config"]["save_model"] is False


@pytest.mark.slow
def test_first_look_prints_source_only_and_the_method_side_by_side(tmp_path):
    from train_helpers import clean_env

    result, _ = run_script(ROOT / "train_dann.py", "--first_look", "--cpu", "--max_steps", "3",
                           "--cache_dir", str(tmp_path / "cache"), cwd=tmp_path, **clean_env(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    (look,) = (tmp_path / "runs").glob("first_look-mnist-mnist_m-*")  # the README's command: the default folder
    lines = result.stdout.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("first look: mnist -> mnist_m"))
    assert lines[first + 1].split()[:2] == ["source", "only"] and lines[first + 2].split()[0] == "dann"
    for name in ("source_only", "dann"):
        results = json.loads((look / name / "results.json").read_text())
        assert results["config"]["backbone"] == "lenet_bn" and results["config"]["dataset"] == "digits_shipped"
    dann = json.loads((look / "dann" / "results.json").read_text())
    # the first DANN row of sweeps/tables/digits.yaml: the reference recipe, batches in separate passes
    assert dann["config"]["alpha_schedule"] == "warm_start" and dann["config"]["domain_batches"] == "separate"
    source_only = json.loads((look / "source_only" / "results.json").read_text())
    assert source_only["config"]["lr_schedule"] == "inv"
    # DANN's recipe adds TLlib's bottleneck; the source-only row it is compared with has none
    assert (dann["config"]["bottleneck_dim"], source_only["config"]["bottleneck_dim"]) == (256, 0)
