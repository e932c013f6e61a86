"""`sparsetrain golden`: export golden training tensors, or verify / summarise a golden directory."""
from __future__ import annotations

import argparse

NAME = "golden"
HELP = "golden training tensors: `export` (short training run that dumps them) and `verify` (checksums, shapes)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from sparsetrain.commands import train as train_cmd

    sub = p.add_subparsers(dest="golden_command", metavar="ACTION", required=True)
    exp = sub.add_parser("export", help="train briefly and write golden tensors (as `train --dump-tensors`)")
    train_cmd.add_arguments(exp)
    exp.set_defaults(dump_tensors=True)
    ver = sub.add_parser("verify", help="load a golden directory, verify it and list its layers")
    ver.add_argument("path", help="golden directory, or a run directory with one golden/step_* inside")


def run(args: argparse.Namespace) -> int:
    if args.golden_command == "export":
        from sparsetrain.commands import train as train_cmd

        args.dump_tensors = True
        return train_cmd.run(args)
    from sparsetrain.golden.training.tensors import load_golden

    g = load_golden(args.path)
    run_info = g.manifest["run"]
    print(f"{g.path}: {g.manifest['format']} v{g.manifest['version']}, model {run_info.get('model')}, "
          f"step {run_info.get('step')}, p {run_info.get('p')}, seed {run_info.get('seed')}: metadata and array "
          f"checksums ok")
    if run_info.get("world_size", 1) > 1:  # a distributed run: the tensors are one rank's shard
        print(f"  rank {run_info['rank']} of {run_info['world_size']}: {run_info['batch_size']} of the "
              f"{run_info['global_batch']} samples of the global batch")
    for name in g.layers:
        lay = g.layer(name)
        tau = "off" if lay["tau"] is None else f"{lay['tau']:.3g}"
        print(f"  {name}: {lay['kind']} k={lay['kernel']} s={lay['stride']} p={lay['padding']} g={lay['groups']}, "
              f"prunes {lay['prune_target']} tau={tau}; arrays {', '.join(g.arrays[name])}")
    return 0
