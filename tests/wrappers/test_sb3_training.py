"""Short SB3 runs on the wrapper: PPO (and MaskablePPO when sb3-contrib is installed) train and evaluate."""

from __future__ import annotations

import pytest

from drgym.wrappers import make_discrete
from drgym.wrappers.evaluation import evaluate

pytest.importorskip("stable_baselines3")
torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny networks run fastest on one thread; the setting is restored for the tests that follow."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _params(model) -> list:
    return [p.detach().clone() for p in model.policy.parameters()]


def _changed(before: list, model) -> bool:
    return any(not torch.equal(a, b) for a, b in zip(before, model.policy.parameters()))


def test_ppo_trains_a_few_hundred_steps_and_evaluates():
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    vec_env = make_vec_env(lambda: make_discrete(dataset="demo", max_turns=4), n_envs=2, seed=0)
    model = PPO(
        "MlpPolicy", vec_env, n_steps=64, batch_size=32, n_epochs=2, policy_kwargs={"net_arch": [16]}, seed=0
    )
    before = _params(model)
    model.learn(total_timesteps=256)
    assert model.num_timesteps >= 256
    assert _changed(before, model), "a PPO update must move the policy's parameters"
    vec_env.close()

    env = make_discrete(dataset="demo", max_turns=4)
    result = evaluate(env, lambda obs, _env: int(model.predict(obs, deterministic=True)[0]), [0, 1, 2, 3])
    env.close()
    assert result.episodes == 4 and -1.0 <= result.mean_reward <= 1.0 and 1.0 <= result.mean_turns <= 4.0


def test_maskable_ppo_uses_the_action_masks():
    contrib = pytest.importorskip("sb3_contrib")
    from sb3_contrib.common.maskable.utils import get_action_masks
    from stable_baselines3.common.env_util import make_vec_env

    vec_env = make_vec_env(lambda: make_discrete(dataset="demo", max_turns=4), n_envs=2, seed=0)
    model = contrib.MaskablePPO(
        "MlpPolicy", vec_env, n_steps=64, batch_size=32, n_epochs=2, policy_kwargs={"net_arch": [16]}, seed=0
    )
    before = _params(model)
    model.learn(total_timesteps=128)
    assert _changed(before, model)
    masks = get_action_masks(vec_env)
    assert masks.shape == (2, vec_env.action_space.n) and masks[:, 0].all()
    vec_env.close()

    env = make_discrete(dataset="demo", max_turns=4)
    obs, _ = env.reset(options={"index": 0})
    for _ in range(4):  # a masked policy never picks an invalid slot
        action, _ = model.predict(obs, action_masks=env.action_masks(), deterministic=False)
        assert env.action_masks()[int(action)]
        obs, _, terminated, truncated, info = env.step(int(action))
        assert info["discrete_action"]["valid"]
        if terminated or truncated:
            break
    env.close()
