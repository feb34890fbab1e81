"""Train Stable-Baselines3 PPO on WebResearch-v0 through the discrete wrapper, then test it on held-out questions.

The questions are split by index into train and test sets; PPO trains on episodes drawn from the train set over
the offline local search backend, and is then scored on every test question beside a random policy, a random
policy restricted to valid slots and a fixed rule (search, then answer the top candidate).

    pip install "drgym[sb3]"
    python examples/sb3_ppo.py                                   # the shipped demo set, about a minute
    DRGYM_DATA_MIRROR=/path/to/data python examples/sb3_ppo.py --dataset hotpotqa-dev500 --timesteps 50000
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, fields
from typing import Any

import gymnasium as gym

import drgym  # registers drgym/WebResearch-v0
from drgym.data import load_dataset
from drgym.errors import missing_dependency
from drgym.wrappers import DiscreteResearchWrapper
from drgym.wrappers.evaluation import Evaluation, evaluate, first_answer_policy, random_policy, split_indices


@dataclass
class Args:
    dataset: str = "demo"
    """dataset name (drgym.data.list_datasets()); its questions are split into train and test"""
    test_fraction: float = 0.25
    """fraction of the questions held out for testing"""
    max_turns: int = 6
    """turns per episode (the paper uses 10)"""
    timesteps: int = 20_000
    """PPO environment steps"""
    n_envs: int = 4
    """parallel environments (in one process)"""
    n_steps: int = 128
    """steps per environment per rollout"""
    batch_size: int = 64
    """PPO minibatch size"""
    learning_rate: float = 3e-4
    """Adam learning rate"""
    gamma: float = 1.0
    """discount; episodes are a few turns long and only the answer is rewarded"""
    ent_coef: float = 0.01
    """entropy bonus, which keeps the policy exploring slots early on"""
    hidden: int = 64
    """width of the two hidden layers of the policy and value networks"""
    seed: int = 0
    """seed of the split, PPO and the random policies"""


def parse_args() -> Args:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in fields(Args):
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default)
    return Args(**vars(parser.parse_args()))


def make_env(args: Args, indices: list[int] | None = None, services: Any = None) -> DiscreteResearchWrapper:
    """The wrapped env over the whole dataset, or over the questions at ``indices`` only (for training).

    ``services``: a ``drgym.ToolServices`` shared by the vector env's copies (one search index for all)."""
    corpus = "demo" if args.dataset == "demo" else "wiki-local"
    dataset = args.dataset
    if indices is not None:
        records = load_dataset(args.dataset)
        dataset = [records[i] for i in indices]
    return DiscreteResearchWrapper(
        gym.make("drgym/WebResearch-v0", dataset=dataset, corpus=corpus, max_turns=args.max_turns,
                 services=services)
    )


def train(args: Args, train_indices: list[int]):
    """PPO on episodes drawn from the training questions."""
    try:
        import torch
        from stable_baselines3 import PPO
        from stable_baselines3.common.env_util import make_vec_env
    except ImportError as exc:
        raise missing_dependency("stable-baselines3", "sb3") from exc

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 64-unit MLP runs fastest on one thread
    shared = drgym.ToolServices()  # every copy of the vector env shares one index (and limits, budget, cache)
    try:
        vec_env = make_vec_env(lambda: make_env(args, train_indices, shared), n_envs=args.n_envs, seed=args.seed)
        model = PPO(
            "MlpPolicy",
            vec_env,
            n_steps=args.n_steps,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            gamma=args.gamma,
            ent_coef=args.ent_coef,
            policy_kwargs={"net_arch": [args.hidden, args.hidden]},
            seed=args.seed,
            verbose=0,
        )
        model.learn(total_timesteps=args.timesteps)
        vec_env.close()
    finally:
        shared.close()
        torch.set_num_threads(threads)
    return model


def main() -> None:
    args = parse_args()
    n_questions = len(load_dataset(args.dataset))
    train_indices, test_indices = split_indices(n_questions, args.test_fraction, seed=args.seed)
    print(f"{args.dataset}: {len(train_indices)} train / {len(test_indices)} test questions")

    started = time.perf_counter()
    model = train(args, train_indices)
    print(f"trained PPO for {args.timesteps} steps in {time.perf_counter() - started:.0f} s")

    env = make_env(args)
    policies = {
        "random": random_policy(args.seed),
        "random (valid slots)": random_policy(args.seed, masked=True),
        "search + top span": first_answer_policy,
        "PPO": lambda obs, _env: int(model.predict(obs, deterministic=True)[0]),
    }
    print(f"\n{'policy':<22}{'reward':>9}{'F1':>8}{'answered':>10}{'turns':>7}   (held-out questions)")
    for name, policy in policies.items():
        result: Evaluation = evaluate(env, policy, test_indices)
        print(
            f"{name:<22}{result.mean_reward:>9.3f}{result.mean_f1:>8.3f}{result.answered:>10.0%}"
            f"{result.mean_turns:>7.2f}"
        )
    env.close()


if __name__ == "__main__":
    main()
