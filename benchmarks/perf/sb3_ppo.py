"""SB3 PPO through the discrete wrapper: held-out reward beside a random policy, and env steps/s.

The dataset's questions are split by index (seeded) into train and test. PPO trains on the train questions
over the local backend; every policy then plays each test question once. Throughput is measured apart from
training: steps/s through the wrapper with random valid actions, and the wrapper's own time per step (its
step time minus the wrapped env's).

    python -m benchmarks.perf.sb3_ppo            # hotpotqa-dev500 (needs the data, e.g. DRGYM_DATA_MIRROR)
    python -m benchmarks.perf.sb3_ppo --quick    # the shipped demo set, a smoke run of a few seconds
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import gymnasium as gym

import drgym  # noqa: F401  # registers drgym/WebResearch-v0
from drgym.data import load_dataset
from drgym.errors import missing_dependency
from drgym.wrappers import DiscreteResearchWrapper
from drgym.wrappers.evaluation import evaluate, first_answer_policy, random_policy, split_indices

MAX_TURNS = 6


class _Timed(gym.Wrapper):
    """Adds up the time spent in the wrapped env's ``step`` and ``reset`` (to tell it from the wrapper's)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.inner_s = 0.0

    def step(self, action: Any) -> Any:
        started = time.perf_counter()
        try:
            return self.env.step(action)
        finally:
            self.inner_s += time.perf_counter() - started

    def reset(self, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return self.env.reset(**kwargs)
        finally:
            self.inner_s += time.perf_counter() - started


def make_env(dataset: str, indices: list[int] | None = None, services: Any = None) -> DiscreteResearchWrapper:
    corpus = "demo" if dataset == "demo" else "wiki-local"
    records: Any = dataset
    if indices is not None:
        every = load_dataset(dataset)
        records = [every[i] for i in indices]
    inner = gym.make("drgym/WebResearch-v0", dataset=records, corpus=corpus, max_turns=MAX_TURNS, services=services)
    return DiscreteResearchWrapper(_Timed(inner))


def train_ppo(dataset: str, train: list[int], timesteps: int, seed: int) -> tuple[Any, float]:
    try:
        import torch
        from stable_baselines3 import PPO
        from stable_baselines3.common.env_util import make_vec_env
    except ImportError as exc:
        raise missing_dependency("stable-baselines3", "sb3") from exc

    from drgym.services import ToolServices

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 64-unit MLP runs fastest on one thread
    shared = ToolServices()  # the four envs share one index
    try:
        vec_env = make_vec_env(lambda: make_env(dataset, train, shared), n_envs=4, seed=seed)
        model = PPO(
            "MlpPolicy",
            vec_env,
            n_steps=128,
            batch_size=64,
            gamma=1.0,
            ent_coef=0.01,
            policy_kwargs={"net_arch": [64, 64]},
            seed=seed,
            verbose=0,
        )
        started = time.perf_counter()
        model.learn(total_timesteps=timesteps)
        seconds = time.perf_counter() - started
        vec_env.close()
    finally:
        shared.close()
        torch.set_num_threads(threads)
    return model, seconds


def throughput(dataset: str, steps: int, seed: int) -> dict[str, float]:
    env = make_env(dataset)
    timed = env.env
    assert isinstance(timed, _Timed)
    policy = random_policy(seed, masked=True)
    env.reset(seed=seed)
    env.step(0)  # warm the index and the background loop
    obs, _ = env.reset(seed=seed)
    timed.inner_s = 0.0
    started = time.perf_counter()
    for _ in range(steps):
        obs, _, terminated, truncated, _ = env.step(policy(obs, env))
        if terminated or truncated:
            obs, _ = env.reset()
    wall = time.perf_counter() - started
    env.close()
    return {
        "steps_per_s": steps / wall,
        "step_ms": 1000 * wall / steps,
        "wrapper_ms": 1000 * (wall - timed.inner_s) / steps,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: demo set, a tiny training budget")
    parser.add_argument(
        "--dataset", default=None, help="dataset (default hotpotqa-dev500; demo with --quick)"
    )
    parser.add_argument(
        "--timesteps", type=int, default=None, help="PPO steps (default 30000; 1024 with --quick)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    dataset = args.dataset or ("demo" if args.quick else "hotpotqa-dev500")
    timesteps = args.timesteps or (1024 if args.quick else 30_000)

    train, test = split_indices(len(load_dataset(dataset)), 0.25, seed=args.seed)
    model, train_s = train_ppo(dataset, train, timesteps, args.seed)
    env = make_env(dataset)
    policies = {
        "random": random_policy(args.seed),
        "random (valid slots)": random_policy(args.seed, masked=True),
        "search + top span": first_answer_policy,
        "PPO": lambda obs, _env: int(model.predict(obs, deterministic=True)[0]),
    }
    print(
        f"{dataset}: {len(train)} train / {len(test)} held-out questions; PPO {timesteps} steps "
        f"in {train_s:.0f} s ({timesteps / train_s:.0f} steps/s with updates); max_turns={MAX_TURNS}"
    )
    print(f"\n{'policy':<22}{'reward':>9}{'F1':>8}{'answered':>10}{'turns':>7}")
    for name, policy in policies.items():
        r = evaluate(env, policy, test)
        print(f"{name:<22}{r.mean_reward:>9.3f}{r.mean_f1:>8.3f}{r.answered:>10.0%}{r.mean_turns:>7.2f}")
    env.close()

    t = throughput(dataset, 300 if args.quick else 3000, args.seed)
    print(f"\n{'throughput (random valid actions)':<36}{'value':>10}")
    print(f"{'env steps/s through the wrapper':<36}{t['steps_per_s']:>10.0f}")
    print(f"{'ms per step':<36}{t['step_ms']:>10.2f}")
    print(f"{'  of which the wrapper (ms)':<36}{t['wrapper_ms']:>10.2f}")
    print(f"{'  of which the text env (ms)':<36}{t['step_ms'] - t['wrapper_ms']:>10.2f}")


if __name__ == "__main__":
    main()
