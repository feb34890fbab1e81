#!/usr/bin/env bash
# GRPO training of a DeepResearcher-style policy with verl on a Ray cluster, with the paper's settings:
# GRPO, 16 rollouts per prompt, 256 prompts per step, lr 1e-6 constant, KL loss 0.001 (low_var_kl), entropy
# 0.001, PPO clip 0.2, grad clip 1.0, temperature 1.0, 10 turns, up to 2000 new tokens per turn, 32k context.
# Episodes are played by drgym's agent loop (scripts/verl/agent_loop.yaml); the reward is the env's.
#
# Run on the Ray head node (after `ray start --head` there and `ray start --address=HEAD:6379` on the others),
# in an environment with `pip install -e .[verl]` and verl's GPU stack (vllm):
#
#   TRAIN_DATASET=hotpotqa-train100 NNODES=4 SEARCH=gateway:http://10.0.0.5:8080 \
#       scripts/verl/train_deepresearcher.sh [more hydra overrides...]
#
# MODEL (Qwen/Qwen2.5-7B-Instruct), TRAIN_DATASET / TRAIN_FILE, VAL_DATASET (deepresearcher-dev) / VAL_FILE,
# DATA_DIR, NNODES (1), GPUS_PER_NODE (8), TP (2), SEARCH (local; a `drgym serve` gateway shares one search
# cache, budget and rate limit across all rollout workers), READER (lexical; the paper used an LLM reader,
# e.g. openai:http://HOST:8000/v1), PROTOCOL (drgym; `deepresearcher` continues the original's checkpoints),
# PROJECT / EXPERIMENT (names for the logger). DRY_RUN=1 prints the composed config and exits.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
model="${MODEL:-Qwen/Qwen2.5-7B-Instruct}"
data_dir="${DATA_DIR:-$HOME/.cache/drgym/verl-data}"
nnodes="${NNODES:-1}"
gpus="${GPUS_PER_NODE:-8}"
tp="${TP:-2}"

train_file="${TRAIN_FILE:-}"
if [ -z "$train_file" ]; then
    if [ -z "${TRAIN_DATASET:-}" ]; then
        echo "set TRAIN_DATASET (a drgym dataset, see \`drgym data list\`) or TRAIN_FILE (verl parquet)" >&2
        exit 2
    fi
    python3 -m drgym.integrations.verl.data --dataset "$TRAIN_DATASET" --out "$data_dir" --split train
    train_file="$data_dir/train.parquet"
fi
val_file="${VAL_FILE:-}"
if [ -z "$val_file" ]; then
    python3 -m drgym.integrations.verl.data --dataset "${VAL_DATASET:-deepresearcher-dev}" --out "$data_dir" \
        --split val
    val_file="$data_dir/val.parquet"
fi

extra=()
if [ "${DRY_RUN:-0}" = "1" ]; then
    extra+=(--cfg job)
fi

cd "$root"
exec python3 -m verl.trainer.main_ppo \
    algorithm.adv_estimator=grpo \
    algorithm.norm_adv_by_std_in_grpo=True \
    algorithm.use_kl_in_reward=False \
    data.train_files="$train_file" \
    data.val_files="$val_file" \
    data.train_batch_size=256 \
    data.max_prompt_length=2048 \
    data.max_response_length=30720 \
    data.filter_overlong_prompts=True \
    data.truncation=error \
    actor_rollout_ref.model.path="$model" \
    actor_rollout_ref.model.use_remove_padding=True \
    actor_rollout_ref.model.enable_gradient_checkpointing=True \
    actor_rollout_ref.actor.optim.lr=1e-6 \
    actor_rollout_ref.actor.optim.lr_warmup_steps_ratio=0.0 \
    actor_rollout_ref.actor.optim.clip_grad=1.0 \
    actor_rollout_ref.actor.ppo_mini_batch_size=256 \
    actor_rollout_ref.actor.ppo_epochs=1 \
    actor_rollout_ref.actor.use_dynamic_bsz=True \
    actor_rollout_ref.actor.ppo_max_token_len_per_gpu=34816 \
    actor_rollout_ref.actor.clip_ratio=0.2 \
    actor_rollout_ref.actor.entropy_coeff=0.001 \
    actor_rollout_ref.actor.use_kl_loss=True \
    actor_rollout_ref.actor.kl_loss_coef=0.001 \
    actor_rollout_ref.actor.kl_loss_type=low_var_kl \
    actor_rollout_ref.actor.loss_agg_mode=token-mean \
    actor_rollout_ref.actor.fsdp_config.param_offload=False \
    actor_rollout_ref.actor.fsdp_config.optimizer_offload=False \
    actor_rollout_ref.ref.fsdp_config.param_offload=True \
    actor_rollout_ref.rollout.name=vllm \
    actor_rollout_ref.rollout.mode=async \
    actor_rollout_ref.rollout.n=16 \
    actor_rollout_ref.rollout.temperature=1.0 \
    actor_rollout_ref.rollout.top_p=1.0 \
    actor_rollout_ref.rollout.calculate_log_probs=True \
    actor_rollout_ref.rollout.tensor_model_parallel_size="$tp" \
    actor_rollout_ref.rollout.gpu_memory_utilization=0.6 \
    actor_rollout_ref.rollout.max_model_len=32768 \
    actor_rollout_ref.rollout.multi_turn.enable=True \
    actor_rollout_ref.rollout.multi_turn.max_assistant_turns=10 \
    actor_rollout_ref.rollout.agent.agent_loop_config_path="$root/scripts/verl/agent_loop.yaml" \
    actor_rollout_ref.rollout.agent.default_agent_loop=drgym \
    actor_rollout_ref.rollout.val_kwargs.temperature=0.0 \
    actor_rollout_ref.rollout.val_kwargs.n=1 \
    +drgym.env.search="${SEARCH:-local}" \
    +drgym.env.reader="${READER:-lexical}" \
    +drgym.env.protocol="${PROTOCOL:-drgym}" \
    +drgym.env.max_turns=10 \
    +drgym.max_tokens_per_turn=2000 \
    reward.custom_reward_function.path="$root/drgym/integrations/verl_reward.py" \
    reward.custom_reward_function.name=compute_score \
    trainer.nnodes="$nnodes" \
    trainer.n_gpus_per_node="$gpus" \
    trainer.project_name="${PROJECT:-drgym-deepresearcher}" \
    trainer.experiment_name="${EXPERIMENT:-grpo-qwen2.5-7b}" \
    trainer.logger='["console","tensorboard"]' \
    trainer.val_before_train=True \
    trainer.test_freq=5 \
    trainer.save_freq=10 \
    trainer.total_epochs=1 \
    "${extra[@]}" "$@"
