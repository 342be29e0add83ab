"""`autlearn` commands: data (`setup`, `info`, `users`, `export-user`, `vocab`)."""
from __future__ import annotations

import argparse
import json
import pathlib
import statistics
from typing import TYPE_CHECKING

from autlearn.cli import CommandTree

if TYPE_CHECKING:
    from cloud_pretrain.data.text import Vocabulary

GROUP_HELP = "offline data: public corpora and per-user data"


def register(tree: CommandTree) -> None:
    """Adds the data commands."""
    setup = tree.subcommand("data", "setup", "prepare everything the data needs offline "
                            "(render and cache the handwriting, NLTK data for augmentation)", GROUP_HELP)
    setup.set_defaults(func=run_setup)

    info = tree.subcommand("data", "info", "users, samples, classes and per-user sizes of a task", GROUP_HELP)
    _add_source_flags(info)
    info.add_argument("--json", type=pathlib.Path, metavar="PATH", help="also write the summary as JSON")
    info.add_argument("--plot", type=pathlib.Path, metavar="PATH", help="plot samples per user into this image")
    info.set_defaults(func=run_info)

    users = tree.subcommand("data", "users", "list user ids with their sizes", GROUP_HELP)
    _add_source_flags(users)
    users.add_argument("--top", type=float, metavar="FRACTION",
                       help="only the top FRACTION of users by samples (the paper: 0.1)")
    users.set_defaults(func=run_users)

    export = tree.subcommand("data", "export-user", "one user's train and test data in model-input form (.npz)",
                             GROUP_HELP)
    _add_source_flags(export)
    export.add_argument("--user", required=True, help="user id (see `autlearn data users`)")
    export.add_argument("--out", required=True, type=pathlib.Path, help="output .npz")
    words = export.add_mutually_exclusive_group()
    words.add_argument("--vocab", type=pathlib.Path, help="vocab.txt to map words to ids (nwp)")
    words.add_argument("--bundle", type=pathlib.Path, help="map words to ids with this bundle's own vocabulary")
    export.add_argument("--seq-len", type=int, default=10, help="context length of nwp inputs")
    export.set_defaults(func=run_export_user)

    vocab = tree.subcommand("data", "vocab", "the public corpus's vocabulary as vocab.txt", GROUP_HELP)
    vocab.add_argument("--out", required=True, type=pathlib.Path, help="output vocab.txt")
    vocab.add_argument("--size", type=int, default=10_000, help="most frequent words kept")
    vocab.set_defaults(func=run_vocab)


def _add_source_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", required=True, help="a task recipe of cloud_pretrain/recipes.py")
    parser.add_argument("--leaf", type=pathlib.Path, metavar="PATH",
                        help="LEAF JSON file or directory instead of the built-in per-user data")


def run_setup(args: argparse.Namespace) -> None:
    from augment.wordnet import ensure_nltk_data
    from cloud_pretrain.data.images import handwriting_users
    from cloud_pretrain.data.sources import installed_sources

    for name, path in installed_sources().items():
        print(f"{name}: {path}")
    writers = handwriting_users()
    print(f"handwriting: {len(writers)} writers, {sum(w.num_samples for w in writers)} images cached")
    print(f"NLTK data: {ensure_nltk_data()}")


def run_info(args: argparse.Namespace) -> None:
    from cloud_pretrain.data.sources import task_users
    from cloud_pretrain.data.users import summary
    from cloud_pretrain.recipes import get_task

    source = str(args.leaf) if args.leaf else get_task(args.task).users
    report = summary(task_users(args.task, args.leaf))
    print(f"{args.task} ({source}): {report['users']} users, {report['samples']} samples, "
          f"{report['classes']} classes")
    if "users_with_1000_chars" in report:
        print(f"users with at least 1,000 characters: {report['users_with_1000_chars']}")
    else:
        print(f"users with all 62 classes: {report['users_with_all_classes']}")
    for key in next(iter(report["per_user"].values())):
        values = [size[key] for size in report["per_user"].values()]
        print(f"per-user {key}: min {min(values)}, median {statistics.median(values):g}, max {max(values)}")
    print(f"top 10% by samples: {len(report['top_10_percent'])} users")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"task": args.task, **report}, indent=1) + "\n")
        print(f"wrote {args.json}")
    if args.plot:
        from cloud_pretrain.data.plots import plot_user_sizes

        print(f"wrote {plot_user_sizes(report, args.plot, f'{args.task} ({source})')}")


def run_users(args: argparse.Namespace) -> None:
    from cloud_pretrain.data.sources import task_users
    from cloud_pretrain.data.users import top_users

    users = task_users(args.task, args.leaf)
    if args.top is not None:
        users = top_users(users, args.top)
    for user in users:
        sizes = " ".join(f"{key}={value}" for key, value in user.sizes().items())
        print(f"{user.id}\t{sizes}")


def run_export_user(args: argparse.Namespace) -> None:
    from cloud_pretrain.data.export import export_user
    from cloud_pretrain.data.sources import task_users
    from cloud_pretrain.data.text import Vocabulary
    from cloud_pretrain.data.users import find_user

    vocab = bundle_vocabulary(args.bundle) if args.bundle else Vocabulary.load(args.vocab) if args.vocab else None
    user = find_user(task_users(args.task, args.leaf), args.user)
    out = export_user(user, args.out, vocab, args.seq_len)
    print(f"wrote {out}: {user.id}, {user.num_samples} samples")


def bundle_vocabulary(bundle: pathlib.Path) -> Vocabulary:
    """The vocabulary a bundle's model reads (its tokenizer's vocab_file); ValueError if it reads no text."""
    from cloud_pretrain.data.text import Vocabulary
    from device_runtime.manifest import read_manifest

    tokenizer = read_manifest(bundle).tokenizer
    if tokenizer is None:
        raise ValueError(f"bundle {bundle} has no tokenizer: its model reads no token ids")
    return Vocabulary.load(bundle / tokenizer["vocab_file"])


def run_vocab(args: argparse.Namespace) -> None:
    from cloud_pretrain.data.text import Vocabulary, public_corpus

    vocab = Vocabulary.build(public_corpus(), args.size)
    print(f"wrote {vocab.save(args.out)}: {len(vocab)} tokens")
