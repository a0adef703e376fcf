"""The training loop: one run of a (possibly growing) model, single process or one DDP rank.

Per step: run due growth stages, set the LR, accumulate gradients over micro-batches of this
rank's slice of the global batch, clip, step AdamW, advance the token/FLOP clocks. Every
`eval_every_tokens` it evaluates the fixed validation windows, reports metrics and (when due)
writes a checkpoint; only the final record has `test_loss` (the held-out split, evaluated once).
Nothing in a step draws random numbers (data order is a pure function of (seed, position)), so
resuming from a checkpoint continues bit-identically.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from raygrow.data import BatchSampler, TokenData, load_tokens, val_windows
from raygrow.errors import CheckpointError, ConfigError
from raygrow.flops import flops_per_token
from raygrow.growth import GrowthState, grow
from raygrow.growth.directives import active_directives
from raygrow.model import ModelConfig, Transformer, build_model
from raygrow.train.config import TrainConfig
from raygrow.train.dist import DistContext, resolve_device
from raygrow.train.hooks import LoopHooks, NullHooks, TrainingDiverged, TrainResult
from raygrow.train.lr import LRSchedule, LRState, apply_lr_policy
from raygrow.train.optim import AdamWConfig, build_optimizer, optimizer_state_by_fqn
from raygrow.train.precision import autocast_dtype, cached_peak_flops, resolve_precision
from raygrow.train.prefixes import PrefixLink, PrefixStore, link_run
from raygrow.train.state import (
    TrainState,
    checkpoint_name,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)

if TYPE_CHECKING:
    from raygrow.schedule import GrowthSchedule

LN2 = math.log(2.0)


class Trainer:
    """Holds the live model/optimizer of one run; `run()` trains to the token budget."""

    def __init__(
        self,
        config: TrainConfig,
        schedule: GrowthSchedule | None = None,
        *,
        resume: str | Path | None = None,
        dist: DistContext | None = None,
        hooks: LoopHooks | None = None,
        data: TokenData | None = None,
        verbose: bool = True,
        prefixes: PrefixStore | None = None,
    ) -> None:
        self.device = resolve_device(config.device)
        if config.threads:
            torch.set_num_threads(config.threads)  # before measuring: the cache key has threads
        # resolved once, here: checkpoints and metrics record what actually ran (fp32 or bf16)
        config = config.replace(precision=resolve_precision(config.precision, self.device))
        self.config = config
        self.schedule = schedule
        self.dist = dist or DistContext(device=self.device)
        self.hooks = hooks or NullHooks()
        self.verbose = verbose and self.dist.is_main
        self.out_dir = Path(config.out_dir)
        self.ckpt_dir = self.out_dir / "checkpoints"
        per_rank, rem = divmod(config.batch_size, self.dist.world_size)
        if rem:
            raise ConfigError(
                f"batch_size={config.batch_size} is not divisible by {self.dist.world_size} "
                "workers; pick a multiple of the worker count"
            )
        micro = config.micro_batch_size or per_rank
        if per_rank % micro:
            raise ConfigError(
                f"micro_batch_size={micro} does not divide the per-worker batch {per_rank}; "
                "pick a divisor"
            )
        self.per_rank, self.micro, self.accum = per_rank, micro, per_rank // micro

        self.data = data or load_tokens(config.data, config.tokenizer)
        self.vocab_size = self.data.vocab_size
        self.sampler = BatchSampler(self.data.train, config.seq_len, config.seed)
        self.val_x, self.val_y = val_windows(self.data.val, config.seq_len, config.eval_windows)
        self.bytes_per_token = self.data.bytes_per_token("val")
        self.lr_schedule = LRSchedule(
            peak=config.lr,
            total_steps=config.total_steps,
            warmup_steps=config.warmup_steps,
            min_frac=config.min_lr_frac,
            kind=config.lr_schedule,  # type: ignore[arg-type]
            decay_frac=config.wsd_decay_frac,
        )
        self.adamw = AdamWConfig(
            lr=config.lr, betas=(config.beta1, config.beta2), weight_decay=config.weight_decay
        )
        if schedule is not None:  # fail before any compute, not at the growth step
            schedule.validate(config.tokens, config.seq_len, self._budget_flops())
        self.history: list[dict[str, Any]] = []
        """This run's evaluation records (from step 0 when started fresh or from a prefix)."""
        self.flops_reused = 0.0
        self.prefix = self._link(prefixes) if prefixes is not None else None
        if self.prefix is not None and resume is not None:
            self.prefix.complete = False  # earlier records unknown: store nothing of this run
        self.state = self._initial_state(resume)
        self._build(self.state.model_state, self.state.optim_state)
        self.lr_state = LRState.from_dict(self.state.lr_state) if self.state.lr_state else LRState()

    # ----------------------------------------------------------------------------- set-up
    def _start_config(self) -> ModelConfig:
        model = self.schedule.start if self.schedule else self.config.model
        if model.vocab_size != self.vocab_size:
            model = model.replace(vocab_size=self.vocab_size)
        return model

    def _link(self, store: PrefixStore) -> PrefixLink:
        return link_run(
            store,
            self.config,
            self._start_config(),
            self.schedule,
            data_id=f"{self.data.manifest.content_sha256}:{self.data.tokenizer_spec}",
            threads=torch.get_num_threads(),
            device=self.device.type,
            budget_flops=self._budget_flops(),
        )

    def _from_prefix(self) -> TrainState | None:
        """The latest matching un-grown state of an earlier run (see raygrow.train.prefixes)."""
        found = self.prefix.resume() if self.prefix is not None else None
        if found is None:
            return None
        state = found.state
        state.train_config = self.config.to_dict()
        state.schedule = self.schedule.to_dict() if self.schedule else None
        # replayed records: computed by an earlier run, so all their FLOPs are reused
        self.history = [{**r, "reused": True, "flops_reused": r["flops"]} for r in found.records]
        self.flops_reused = state.flops
        if self.verbose:
            print(f"resumed shared prefix at step {state.step} ({found.path})", flush=True)
        return state

    def _initial_state(self, resume: str | Path | None) -> TrainState:
        if resume is not None:
            state = load_checkpoint(resume)
            bad = self.config.trajectory_mismatch(state.train_config)
            if bad:
                raise CheckpointError(
                    f"checkpoint {resume} was made with different {', '.join(bad)}; resume with "
                    "the original settings or start a new run"
                )
            if (state.schedule or None) != (self.schedule.to_dict() if self.schedule else None):
                raise CheckpointError(
                    f"checkpoint {resume} was made with a different growth schedule; pass the "
                    "same --schedule"
                )
            return state
        shared = self._from_prefix()
        if shared is not None:
            return shared
        config = self._start_config()
        torch.manual_seed(self.config.seed)  # init is a function of the seed alone
        model = Transformer(config)
        return TrainState(
            model_config=config,
            model_state={k: v.detach().clone() for k, v in model.state_dict().items()},
            train_config=self.config.to_dict(),
            schedule=self.schedule.to_dict() if self.schedule else None,
        )

    def _build(self, model_state: dict[str, torch.Tensor], optim_state: dict) -> None:
        self.model_config = self.state.model_config
        self.model: Transformer = build_model(self.model_config, model_state, self.device)
        self.ddp: nn.Module = self.dist.wrap(self.model)
        self.optimizer = build_optimizer(self.model, self.adamw, optim_state)
        self.flops_per_token = flops_per_token(self.model_config, self.config.seq_len)
        self.n_params = self.model_config.n_params()
        self._apply_directives()

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        dtype = autocast_dtype(self.config.precision)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    # ----------------------------------------------------------------------------- growth
    def _apply_directives(self) -> None:
        """MSG branch ramps and incremental freezing, derived from the growth history; each
        event's layers and FQNs are remapped through every later event's layer plan (the rule:
        `raygrow.growth.directives`), so a ramp or freeze follows its weights."""
        active = [e for e in self.state.growth_history if e.get("directives")]
        if not active and not getattr(self, "frozen", None):
            self.frozen = []
            return  # the common case: nothing to ramp or freeze, keep the step cheap
        scales, frozen = active_directives(self.state.growth_history, self.state.step)
        for i, layer in enumerate(self.model.layers):
            layer.branch_scale = scales.get(i, 1.0)
        params = dict(self.model.named_parameters())
        self.frozen: list[nn.Parameter] = [params[n] for n in frozen if n in params]

    def _maybe_grow(self) -> None:
        sched = self.schedule
        while sched is not None and self.state.schedule_cursor < len(sched.stages):
            last_growth = (
                self.state.growth_history[-1]["flops"] if self.state.growth_history else -1.0
            )
            curve = [(f, v) for f, v in self.state.val_curve if f > last_growth]
            if not sched.is_due(
                self.state.schedule_cursor,
                self.state.tokens,
                self.state.flops,
                self.config.tokens,
                self._budget_flops(),
                curve,
            ):
                return
            if self.prefix is not None:  # the last un-grown state: exactly where others grow
                self.prefix.offer(self.state, self.history, self.snapshot)
            self._grow(sched.stages[self.state.schedule_cursor])

    def _budget_flops(self) -> float:
        final = self.schedule.final_config() if self.schedule else self.config.model
        return flops_per_token(final, self.config.seq_len) * self.config.tokens

    def _grow(self, stage: Any) -> None:
        st = self.state
        before = GrowthState(
            config=self.model_config,
            params={k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            optim=optimizer_state_by_fqn(self.model, self.optimizer),
            step=st.step,
            branch_scales=active_directives(st.growth_history, st.step)[0],  # for the report
        )
        seed = self.config.seed * 1_000_003 + st.schedule_cursor * 7919 + (stage.seed or 0)
        generator = torch.Generator().manual_seed(seed)
        probe = (self.val_x[:8], self.val_y[:8])
        start_pos, batch = st.data_position, self.config.batch_size

        def train_batch(i: int) -> tuple[torch.Tensor, torch.Tensor]:
            return self.sampler.global_batch(start_pos + i * batch, batch, 0, 1)

        after, report = grow(
            before,
            stage.operator,
            generator=generator,
            opt_policy=stage.opt_policy,
            probe_batch=probe,
            train_batch_fn=train_batch,
            **stage.params,
        )
        event = report.to_dict()
        directives = event.get("directives") or {}
        st.flops += float(directives.get("extra_flops", 0.0))
        extra_seq = int(directives.get("extra_sequences", 0))
        st.data_position += extra_seq
        st.tokens += extra_seq * self.config.seq_len
        event.update(step=st.step, tokens=st.tokens, flops=st.flops, stage=st.schedule_cursor)
        st.growth_history.append(event)
        st.schedule_cursor += 1
        st.model_config = after.config
        self.lr_state = apply_lr_policy(
            self.lr_state,
            stage.lr_policy,
            st.step,
            lr_scale=float(stage.lr_params.get("lr_scale", 1.0)),
            rewarm_steps=stage.rewarm_steps(self.config.tokens_per_step),
        )
        self._build(after.params, after.optim)
        self.hooks.on_growth(event)
        if self.verbose:
            print(
                f"grow[{event['operator']}] step {st.step}: {before.config.shape} -> "
                f"{after.config.shape}, loss {report.loss_before:.4f} -> {report.loss_after:.4f}",
                flush=True,
            )

    # ----------------------------------------------------------------------------- steps
    def _train_step(self, lr: float) -> float:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        x, y = self.sampler.global_batch(
            self.state.data_position, self.config.batch_size, self.dist.rank, self.dist.world_size
        )
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        loss_sum = 0.0
        for i in range(self.accum):
            xs, ys = (
                x[i * self.micro : (i + 1) * self.micro],
                y[i * self.micro : (i + 1) * self.micro],
            )
            sync = i == self.accum - 1 or not self.dist.distributed
            ctx = contextlib.nullcontext() if sync else self.ddp.no_sync()  # type: ignore[operator]
            with ctx:
                with self._autocast():
                    logits = self.ddp(xs)
                loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), ys.reshape(-1))
                (loss / self.accum).backward()
            loss_sum += loss.detach()
        if self.config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        for p in self.frozen:
            p.grad = None  # AdamW skips parameters without a gradient
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss_sum) / self.accum

    @torch.no_grad()
    def evaluate(self, windows: tuple[torch.Tensor, torch.Tensor] | None = None) -> float:
        """Mean loss (nats/token) on fixed windows (default: val's), split across ranks."""
        xs, ys = windows if windows is not None else (self.val_x, self.val_y)
        self.model.eval()
        n = len(xs)
        lo = n * self.dist.rank // self.dist.world_size
        hi = n * (self.dist.rank + 1) // self.dist.world_size
        total = 0.0
        for i in range(lo, hi, 32):
            j = min(i + 32, hi)
            x, y = xs[i:j].to(self.device), ys[i:j].to(self.device)
            with self._autocast():
                logits = self.model(x)
            total += F.cross_entropy(
                logits.float().view(-1, logits.size(-1)), y.reshape(-1), reduction="sum"
            ).item()
        self.model.train()
        total, count = self.dist.all_reduce_sum([total, float((hi - lo) * ys.shape[1])])
        return total / count

    def test_metrics(self) -> dict[str, float]:
        """The held-out test split (as many windows as val) on the current, final model."""
        loss = self.evaluate(self.data.test_windows(self.config.seq_len, self.config.eval_windows))
        return {"test_loss": loss, "test_bpb": loss / LN2 / self.data.bytes_per_token("test")}

    # ----------------------------------------------------------------------------- run
    def step_once(self) -> tuple[float, float]:
        """One optimizer step including due growth; returns (train loss, lr)."""
        cfg, st = self.config, self.state
        self._maybe_grow()
        self._apply_directives()
        lr = self.lr_schedule.lr_at(st.step, self.lr_state)
        loss = self._train_step(lr)
        if not math.isfinite(loss):
            raise TrainingDiverged(
                f"train loss is {loss} at step {st.step} (tokens {st.tokens}); lower lr"
            )
        st.step += 1
        st.data_position += cfg.batch_size
        st.tokens += cfg.tokens_per_step
        st.flops += self.flops_per_token * cfg.tokens_per_step
        return loss, lr

    def run(self) -> TrainResult:
        cfg, st = self.config, self.state
        eval_every = cfg.every_steps(cfg.eval_every_tokens)
        ckpt_every = (
            cfg.every_steps(cfg.checkpoint_every_tokens) if cfg.checkpoint_every_tokens else 0
        )
        history = self.history
        metrics_file = self.out_dir / "metrics.jsonl"
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        peak = cached_peak_flops(cfg.precision, self.device)
        window_loss, window_steps, window_time, window_tokens = 0.0, 0, 0.0, 0
        if self.flops_reused:  # a shared prefix: its records, as if this run had made them
            for rec in history:
                done = rec["step"] == cfg.total_steps  # a finished run reused whole
                if done and "test_loss" not in rec:  # stored without it: the final model's
                    rec.update(self.test_metrics())
                self._emit(rec, metrics_file, self.save() if done else None)
        elif st.step == 0 and not st.val_curve:
            history.append(self._eval_record(None, 0.0, 0, peak))
            st.val_curve.append((st.flops, history[-1]["val_loss"]))
            self._emit(history[-1], metrics_file, None)
        while st.step < cfg.total_steps:
            t0 = time.perf_counter()
            loss, lr = self.step_once()
            window_time += time.perf_counter() - t0
            window_loss += loss
            window_steps += 1
            window_tokens += cfg.tokens_per_step
            if self.verbose and cfg.log_every_steps and st.step % cfg.log_every_steps == 0:
                print(f"step {st.step}/{cfg.total_steps} loss {loss:.4f} lr {lr:.2e}", flush=True)
            last = st.step == cfg.total_steps
            evaluated = st.step % eval_every == 0 or last
            if evaluated:
                train_loss = self.dist.all_reduce_sum([window_loss / window_steps])[0]
                train_loss /= self.dist.world_size
                rec = self._eval_record(train_loss, window_time, window_tokens, peak, lr)
                rec.update(self.test_metrics() if last else {})  # the run's only test eval
                st.val_curve.append((st.flops, rec["val_loss"]))
                history.append(rec)
                ckpt = None
                if last or (ckpt_every and st.step % ckpt_every == 0):
                    ckpt = self.save()
                self._emit(rec, metrics_file, ckpt)
                window_loss, window_steps, window_time, window_tokens = 0.0, 0, 0.0, 0
            if self.prefix is not None and self.prefix.wants(st.step, evaluated, last):
                self.prefix.offer(st, history, self.snapshot)
        return TrainResult(state=self.snapshot(), history=history)

    def _eval_record(
        self,
        train_loss: float | None,
        train_s: float,
        tokens: int,
        peak: float,
        lr: float | None = None,
    ) -> dict[str, Any]:
        st = self.state
        t0 = time.perf_counter()
        val = self.evaluate()
        eval_s = time.perf_counter() - t0
        tps = tokens / train_s if train_s > 0 else 0.0
        return {
            "step": st.step,
            "tokens": st.tokens,
            "flops": st.flops,
            "val_loss": val,
            "val_bpb": val / LN2 / self.bytes_per_token,
            "train_loss": train_loss,
            "tokens_per_s": tps,
            "train_s": train_s,  # step time of this window (growth included), wall seconds
            "eval_s": eval_s,  # this evaluation's wall seconds
            "mfu": tps * self.flops_per_token / peak if peak else 0.0,
            "lr": lr if lr is not None else self.lr_schedule.lr_at(st.step, self.lr_state),
            "n_params": self.n_params,
            "n_layers": self.model_config.n_layers,
            "d_model": self.model_config.d_model,
            "growth_events": len(st.growth_history),
            "flops_reused": self.flops_reused,  # taken from the prefix store, not computed
            # tokens seen when the model last grew (None: not yet): growth-aware stopping
            "last_growth_tokens": st.growth_history[-1]["tokens"] if st.growth_history else None,
            "precision": self.config.precision,
        }

    def _emit(self, rec: dict[str, Any], metrics_file: Path, ckpt: Path | None) -> None:
        if self.dist.is_main:
            with metrics_file.open("a") as fh:
                fh.write(json.dumps(rec) + "\n")
            if self.verbose:
                print(
                    f"eval step {rec['step']} tokens {rec['tokens']:,} val_loss "
                    f"{rec['val_loss']:.4f} ({rec['val_bpb']:.3f} bpb) train_loss "
                    f"{rec['train_loss'] or float('nan'):.4f} {rec['tokens_per_s']:,.0f} tok/s "
                    f"mfu {rec['mfu']:.2f}",
                    flush=True,
                )
        self.hooks.on_eval(rec, ckpt)

    def snapshot(self) -> TrainState:
        st = self.state
        st.model_state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        st.optim_state = optimizer_state_by_fqn(self.model, self.optimizer)
        st.lr_state = self.lr_state.to_dict()
        st.rng = {"torch": torch.get_rng_state()}
        return st

    def save(self) -> Path | None:
        """Checkpoint (main rank writes; every rank returns the path it would use)."""
        path = self.ckpt_dir / checkpoint_name(self.state.step)
        state = self.snapshot()
        if self.dist.is_main:
            save_checkpoint(state, path)
            prune_checkpoints(self.ckpt_dir, self.config.keep_checkpoints)
        self.dist.barrier()
        return path if self.dist.is_main else None


def train(
    config: TrainConfig,
    schedule: GrowthSchedule | None = None,
    *,
    resume: str | Path | None = None,
    dist: DistContext | None = None,
    hooks: LoopHooks | None = None,
    data: TokenData | None = None,
    verbose: bool = True,
    prefixes: PrefixStore | None = None,
) -> TrainResult:
    """Train to the budget; `resume` is a checkpoint file or folder (newest file used)."""
    return Trainer(
        config,
        schedule,
        resume=resume,
        dist=dist,
        hooks=hooks,
        data=data,
        verbose=verbose,
        prefixes=prefixes,
    ).run()
