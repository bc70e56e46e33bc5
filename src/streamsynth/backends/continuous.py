"""Continuous batching for a local transformers model, with per-row seeded sampling and a
prompt-block cache.

One worker thread owns the model and runs a decode loop over a batch of rows. A row leaves the
batch the step it ends (end of sequence, a stop string, or its token limit) and waiting requests
join as soon as slots are free, so the model never runs a padded slot until the longest reply of
a static batch ends.

- **Seeded per row.** Each row samples with its own ``torch.Generator`` (seeded by the request's
  (seed, item, step, k)), one draw per step, via the Gumbel-max trick over the top-k nucleus. A
  request's text depends on its own seed, not on which rows share its batch.
- **Shared prefixes.** Requests of one task share long prompt heads (the chat template, the
  label's instruction, sometimes a demonstration). Keys and values are kept in blocks of ``BLOCK``
  tokens, each keyed by every token up to its end (vLLM's automatic prefix caching), and a
  request reuses the longest chain of cached blocks that starts its prompt. Requests that join
  together cannot reuse each other's blocks in the one pass that prefills them, so the heads two
  or more of them share are prefilled first, once each (shorter shared heads before longer ones).
  Only the rest is prefilled, in passes of rows with similar lengths.
- **Layout.** The batch cache is right-aligned: each row is ``[padding][cached blocks][padding][suffix +
  generated]``; the attention mask hides padding and each row's positions count its real tokens
  only. Rows join by left-padding to a common length; leading columns that are padding in every
  row are cut off.
"""

from __future__ import annotations

import collections
import concurrent.futures
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from streamsynth.records import Completion, CompletionRequest, TokenLogprob

TOP_K = 100  # the nucleus is taken among the top 100 tokens (a full sort costs ~30x more per step)
BLOCK = 8  # tokens per cached block inside the last message
PASS_COST = 24  # a prefill pass's fixed cost, in padded tokens (measured: ~20 ms at ~450 prefill tokens/s)


@dataclass
class _Row:
    request: CompletionRequest
    future: concurrent.futures.Future
    prompt_ids: list[int]
    generator: Any
    started: float
    out: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    next_pos: int = 0  # position id of the next token fed to the model
    cached_len: int = 0  # prompt tokens whose keys and values came from the caches
    dead: bool = False  # answered; rides along masked until the batch is rebuilt


class ContinuousBatcher:
    """Owns ``model`` in a worker thread; ``submit`` returns a future of the ``Completion``."""

    def __init__(self, model: Any, tokenizer: Any, *, model_id: str, max_batch: int = 64,
                 min_join: int | None = None, block_cache_size: int = 1024,
                 device: str = "cpu") -> None:
        self.model = model
        self.tok = tokenizer
        self.model_id = model_id
        # transformers 5.x renamed the forward's cache argument (past_key_values -> cache; the old
        # name warns from 5.25 and goes in 5.40): pass whichever this version takes
        self._cache_kw = _cache_keyword(model)
        self.max_batch = max_batch
        # join in groups: one prefill pass for several newcomers is cheaper than one per step
        self.min_join = min_join if min_join is not None else max(1, max_batch // 4)
        self.device = device
        self._queue: queue.Queue = queue.Queue()
        # blocks of prompts: key = every prompt token up to the block's end
        self._blocks: collections.OrderedDict[tuple[int, ...], list[tuple[Any, Any]]] = collections.OrderedDict()
        self._block_cache_size = block_cache_size
        self._closed = False
        self._error: BaseException | None = None
        self.stats = {"steps": 0, "prefills": 0, "block_hits": 0, "shared_heads": 0, "head_tokens": 0,
                      "prefilled_tokens": 0, "prefill_padded": 0, "generated": 0,
                      "prefill_s": 0.0, "step_s": 0.0, "rows_stepped": 0}
        self._thread = threading.Thread(target=self._loop, name="streamsynth-continuous", daemon=True)
        self._thread.start()

    # -- public --------------------------------------------------------------------------------
    def submit(self, request: CompletionRequest, prompt_ids: list[int]) -> concurrent.futures.Future:
        fut: concurrent.futures.Future = concurrent.futures.Future()
        if self._error is not None:
            fut.set_exception(self._error)
        elif self._closed:
            fut.set_exception(RuntimeError("the local model was closed"))
        else:
            self._queue.put((request, prompt_ids, fut))
        return fut

    def close(self) -> None:
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout=30)

    # -- the loop ------------------------------------------------------------------------------
    def _loop(self) -> None:
        import torch

        batch = _Batch()
        with torch.inference_mode():
            while True:
                waiting: list = []
                try:
                    live = batch.live()
                    waiting = self._take(self.max_batch - len(live), block=not live)
                    if waiting is None:
                        break
                    dead = len(batch.rows) - len(live)
                    # rebuild the batch (drop finished rows, add newcomers) only now and then:
                    # finished rows ride along masked until enough of them pile up
                    if waiting or dead >= max(1, self.max_batch // 8) or (batch.rows and not live):
                        batch = self._rebuild(batch, waiting)
                    if batch.live():
                        self._step(batch)
                except BaseException as exc:  # noqa: BLE001 - every waiting caller must hear of it
                    self._error = exc
                    futures = [r.future for r in batch.rows] + [item[2] for item in waiting or ()]
                    for fut in futures:  # the batch's rows, and newcomers taken but not yet in it
                        if not fut.done():
                            fut.set_exception(exc)
                    batch = _Batch()
                    self._fail_queue(exc)
                    if not isinstance(exc, Exception):
                        raise
        self._fail_queue(RuntimeError("the local model was closed"))

    def _fail_queue(self, exc: BaseException) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None and not item[2].done():
                item[2].set_exception(exc)

    def _take(self, free: int, *, block: bool) -> list | None:
        """Up to ``free`` waiting requests that may join now (None when closed).

        Blocks only when the batch is empty; otherwise newcomers join once ``min_join`` wait (or
        all the free slots can be filled), so one prefill pass serves several of them.
        """
        out: list = []
        if block:
            item = self._queue.get()
            if item is None:
                return None
            out.append(item)
            time.sleep(0.005)  # let a burst of requests arrive together
        else:
            waiting = self._queue.qsize()
            # join in groups (one prefill for many is far cheaper per row), or when the batch runs thin
            thin = self.max_batch - free < self.max_batch // 2
            if free <= 0 or waiting == 0 or (free < self.min_join and not thin):
                return []
        while len(out) < free:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._queue.put(None)  # close once this batch is done
                break
            out.append(item)
        return out

    def _rebuild(self, batch: "_Batch", waiting: list) -> "_Batch":
        """A new batch: the live rows of ``batch`` plus the prefilled newcomers."""
        import torch

        keep = [i for i, r in enumerate(batch.rows) if not r.dead]
        parts = []
        if keep:
            index = torch.tensor(keep)
            parts.append(([batch.rows[i] for i in keep], batch.kv(index), batch.mask[index]))
        new_rows = []
        for request, ids, fut in waiting:
            if not fut.cancelled():
                g = torch.Generator().manual_seed(request.sampling_seed)
                new_rows.append(_Row(request, fut, ids, g, time.perf_counter()))
        self._prefill_shared_heads([r.prompt_ids for r in new_rows])
        for group, chains in self._passes(new_rows):
            kv, mask, first_logits = self._prefill(group, chains)
            self._sample_into(group, first_logits)  # newcomers draw their first token from the prefill
            self._finish(group)
            parts.append((group, kv, mask))
        if not parts:
            return _Batch()
        return _Batch.stack(parts)

    def _prefill_shared_heads(self, prompts: list[list[int]]) -> None:
        """Prefill once each the uncached block-aligned heads that two or more of ``prompts`` share,
        so each prompt then finds them in the block cache (they would otherwise be computed once per
        prompt, in the one pass that prefills the newcomers together)."""
        counts: collections.Counter[tuple[int, ...]] = collections.Counter()
        starts = [BLOCK * len(self._cached_blocks(p, touch=False)) for p in prompts]
        for p, start in zip(prompts, starts):
            counts.update(tuple(p[:end]) for end in range(start + BLOCK, len(p), BLOCK))
        heads: dict[tuple[int, ...], list[int]] = {}
        new_blocks = 0
        for p, start in zip(prompts, starts):
            end = start
            while end + BLOCK < len(p) and counts[tuple(p[: end + BLOCK])] >= 2:
                end += BLOCK
            if end > start and tuple(p[:end]) not in heads:
                heads[tuple(p[:end])] = p[: end + 1]  # one token past the head: its blocks are kept
                new_blocks += (end - start) // BLOCK
        if not heads or new_blocks > self._block_cache_size:
            # heads that would not fit would evict one another before the newcomers look them up:
            # then every prompt is prefilled whole, as with no cache (not twice)
            return
        pseudo = list(heads.values())
        self._prefill_shared_heads(pseudo)  # heads the heads share, first (fewer each level: it ends)
        for group, chains in self._passes([_Row(None, None, p, None, 0.0) for p in pseudo]):  # type: ignore[arg-type]
            self._prefill(group, chains)  # keeps the blocks; logits unused
            self.stats["shared_heads"] += len(group)

    def _passes(self, rows: list[_Row]) -> list[tuple[list[_Row], list[list[list[tuple[Any, Any]]]]]]:
        """``rows`` in prefill passes of similar uncached length, each with its rows' cached chains."""
        chains = {id(r): self._cached_blocks(r.prompt_ids) for r in rows}
        groups = _prefill_groups(rows, [len(r.prompt_ids) - BLOCK * len(chains[id(r)]) for r in rows])
        return [(group, [chains[id(r)] for r in group]) for group in groups]

    def _cached_blocks(self, prompt_ids: list[int], *, touch: bool = True) -> list[list[tuple[Any, Any]]]:
        """The longest chain of cached blocks that starts ``prompt_ids`` (at least one prompt token is
        left to prefill: its logits give the first draw)."""
        chain, keys = [], []
        end = BLOCK
        while end <= len(prompt_ids) - 1:
            key = tuple(prompt_ids[:end])
            hit = self._blocks.get(key)
            if hit is None:
                break
            chain.append(hit)
            keys.append(key)
            end += BLOCK
        if touch:
            for key in reversed(keys):  # a chain's first blocks are the most recently used: tails go first
                self._blocks.move_to_end(key)
        return chain

    def _prefill(self, rows: list[_Row], chains: list[list[list[tuple[Any, Any]]]]) -> tuple[Any, Any, Any]:
        """Prefill ``rows`` in one left-padded pass over what the block cache does not hold (``chains``:
        each row's cached blocks from its first token)."""
        import torch
        from transformers import DynamicCache

        t0 = time.perf_counter()
        for r, chain in zip(rows, chains):
            r.cached_len = BLOCK * len(chain)
            if r.request is not None:  # a shared head's pass is not a request's
                self.stats["block_hits"] += len(chain)
        suffixes = [r.prompt_ids[r.cached_len :] for r in rows]
        P = max(r.cached_len for r in rows)
        S = max(len(s) for s in suffixes)
        n = len(rows)
        self.stats["prefill_padded"] += n * S
        input_ids = torch.full((n, S), int(self.tok.pad_token_id), dtype=torch.long)
        mask = torch.zeros((n, P + S), dtype=torch.long)
        pos = torch.zeros((n, S), dtype=torch.long)
        for i, (r, suf) in enumerate(zip(rows, suffixes)):
            input_ids[i, S - len(suf):] = torch.tensor(suf)
            mask[i, P - r.cached_len : P] = 1
            mask[i, P + S - len(suf):] = 1
            pos[i, S - len(suf):] = torch.arange(r.cached_len, r.cached_len + len(suf))
            r.next_pos = r.cached_len + len(suf)
            self.stats["prefilled_tokens"] += len(suf)
            if r.request is None:
                self.stats["head_tokens"] += len(suf)
        past = None
        if P > 0:
            ref = next(c for c in chains if c)[0]
            data = []
            for li in range(len(ref)):
                k0, v0 = ref[li]
                K = k0.new_zeros((n, k0.shape[1], P, k0.shape[3]))
                V = v0.new_zeros((n, v0.shape[1], P, v0.shape[3]))
                for i, chain in enumerate(chains):
                    at = P - rows[i].cached_len
                    for block in chain:
                        k, v = block[li]
                        K[i, :, at : at + k.shape[2]] = k[0]
                        V[i, :, at : at + v.shape[2]] = v[0]
                        at += k.shape[2]
                data.append((K, V))
            past = DynamicCache(ddp_cache_data=data)
        out = self.model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device),
                         position_ids=pos.to(self.device), use_cache=True, logits_to_keep=1,
                         **{self._cache_kw: past if past is not None else DynamicCache()})
        layers = [(layer.keys, layer.values) for layer in _out_cache(out).layers]
        self._keep_blocks(rows, layers, P + S)
        self.stats["prefills"] += 1
        self.stats["prefill_s"] += time.perf_counter() - t0
        return layers, mask, out.logits[:, -1, :]

    def _keep_blocks(self, rows: list[_Row], layers: list[tuple[Any, Any]], width: int) -> None:
        """Cache the blocks of the prompts that this prefill computed."""
        for i, r in enumerate(rows):
            n = len(r.prompt_ids)
            # deepest first, so the least recently used end of the cache holds tails, not heads
            for end in reversed(range(r.cached_len + BLOCK, n, BLOCK)):
                key = tuple(r.prompt_ids[:end])
                if key not in self._blocks:
                    lo, hi = width - n + end - BLOCK, width - n + end  # prompt token t sits in column width - n + t
                    self._blocks[key] = [(k[i : i + 1, :, lo:hi].clone(), v[i : i + 1, :, lo:hi].clone()) for k, v in layers]
        while len(self._blocks) > self._block_cache_size:
            self._blocks.popitem(last=False)

    def _step(self, batch: "_Batch") -> None:
        """One decode step for every row; finished rows are fed padding and masked out."""
        import torch

        t0 = time.perf_counter()
        live = [i for i, r in enumerate(batch.rows) if not r.dead]
        pad = int(self.tok.pad_token_id)
        ids = torch.tensor([[pad if r.dead else r.out[-1]] for r in batch.rows], device=self.device)
        pos = torch.tensor([[r.next_pos] for r in batch.rows], device=self.device)
        col = torch.tensor([[0 if r.dead else 1] for r in batch.rows], dtype=batch.mask.dtype)
        batch.mask = torch.cat([batch.mask, col], dim=1)
        out = self.model(input_ids=ids, attention_mask=batch.mask.to(self.device), position_ids=pos,
                         use_cache=True, **{self._cache_kw: batch.cache})
        rows = [batch.rows[i] for i in live]
        for r in rows:
            r.next_pos += 1
        self._sample_into(rows, out.logits[live, -1, :])
        self._finish(rows)
        self.stats["steps"] += 1
        self.stats["rows_stepped"] += len(rows)
        self.stats["step_s"] += time.perf_counter() - t0

    def _sample_into(self, rows: list[_Row], logits: Any) -> None:
        """Draw one token per row with the row's own generator (Gumbel-max over the top-k nucleus)."""
        import torch

        logits = logits.float()
        k = min(TOP_K, logits.shape[-1])
        temps = torch.tensor([[max(r.request.params.temperature, 1e-5)] for r in rows])
        top_p = torch.tensor([[r.request.params.top_p] for r in rows])
        vals, idx = torch.topk(logits / temps, k, dim=-1)
        probs = torch.softmax(vals, dim=-1)
        vals = vals.masked_fill((torch.cumsum(probs, dim=-1) - probs) >= top_p, float("-inf"))
        noise = torch.stack([torch.rand(k, generator=r.generator) for r in rows]).clamp_(1e-10, 1.0 - 1e-7)
        pick = torch.argmax(vals - torch.log(-torch.log(noise)), dim=-1)
        greedy = torch.tensor([r.request.params.temperature <= 0 for r in rows])
        chosen = torch.where(greedy, idx[:, 0], idx.gather(1, pick[:, None])[:, 0]).tolist()
        want_lp = [r.request.params.logprobs for r in rows]
        lsm = torch.log_softmax(logits, dim=-1) if any(want_lp) else None
        for i, (r, t) in enumerate(zip(rows, chosen)):
            r.out.append(int(t))
            if lsm is not None and want_lp[i]:
                top = torch.topk(lsm[i], 5)
                r.logprobs.append(TokenLogprob(self.tok.decode([int(t)]), float(lsm[i, t]),
                                               tuple((self.tok.decode([int(j)]), float(v)) for v, j in zip(top.values, top.indices))))

    def _finish(self, rows: list[_Row]) -> None:
        """Answer every row that ended this step and mark it dead."""
        eos = self.tok.eos_token_id
        for r in rows:
            done = self._finished(r, eos)
            if done is None:
                continue
            text, finish = done
            r.dead = True
            n_gen = len(r.out) - (1 if finish == "stop" and r.out and r.out[-1] == eos else 0)
            self.stats["generated"] += n_gen
            if not r.future.done():
                r.future.set_result(Completion(
                    text=text, model=self.model_id, finish_reason=finish, prompt_tokens=len(r.prompt_ids),
                    completion_tokens=n_gen, latency_s=time.perf_counter() - r.started,
                    logprobs=tuple(r.logprobs[:n_gen]) if r.request.params.logprobs else None,
                ))

    def _finished(self, r: _Row, eos: int) -> tuple[str, str] | None:
        params = r.request.params
        if r.out and r.out[-1] == eos:
            return self.tok.decode(r.out[:-1], skip_special_tokens=True), "stop"
        if params.stop:
            text = self.tok.decode(r.out, skip_special_tokens=True)
            cut = min((text.find(s) for s in params.stop if s and s in text), default=-1)
            if cut >= 0:
                return text[:cut], "stop"
        if len(r.out) >= params.max_new_tokens:
            return self.tok.decode(r.out, skip_special_tokens=True), "length"
        return None


def _prefill_groups(rows: list[Any], lengths: list[int]) -> list[list[Any]]:
    """Split newcomers (or the shared heads they need) into prefill passes of similar length.

    A pass pads every row to its longest, so one pass over rows that hit the block cache (short
    suffixes) and rows that missed it (long ones) computes mostly padding. Rows are sorted by
    length and cut into contiguous groups that minimise padded tokens plus ``PASS_COST`` per pass.
    """
    if len(rows) <= 1:
        return [rows] if rows else []
    order = sorted(range(len(rows)), key=lambda i: (lengths[i], i))
    n = len(order)
    best = [0.0] + [float("inf")] * n  # best[j]: cost of the first j sorted rows
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        longest = lengths[order[j - 1]]
        for i in range(j):
            c = best[i] + (j - i) * longest + PASS_COST
            if c < best[j]:
                best[j], cut[j] = c, i
    groups, j = [], n
    while j > 0:
        groups.append([rows[k] for k in order[cut[j] : j]])
        j = cut[j]
    return groups[::-1]


def _buffer_layer_class() -> type:
    from transformers.cache_utils import DynamicLayer

    class BufferLayer(_BufferLayer, DynamicLayer):  # a DynamicLayer to transformers' checks
        pass

    return BufferLayer


class _BufferLayer:
    """One layer's keys and values in a preallocated buffer: a decode step writes in place
    (DynamicCache concatenates, copying the whole cache every step)."""

    is_sliding = False
    is_compileable = False

    def __init__(self, keys: Any, values: Any, spare: int = 64) -> None:
        import torch

        self.is_initialized = True
        b, h, n, d = keys.shape
        self.kb = torch.empty((b, h, n + spare, d), dtype=keys.dtype)
        self.vb = torch.empty((b, h, n + spare, d), dtype=values.dtype)
        self.kb[:, :, :n] = keys
        self.vb[:, :, :n] = values
        self.n = n
        self.dtype, self.device = keys.dtype, keys.device

    @property
    def keys(self) -> Any:
        return self.kb[:, :, : self.n]

    @keys.setter
    def keys(self, value: Any) -> None:  # transformers' own methods assign; keep a buffer of it
        self.kb, self.n = value, value.shape[2]

    @property
    def values(self) -> Any:
        return self.vb[:, :, : self.n]

    @values.setter
    def values(self, value: Any) -> None:
        self.vb = value

    def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        import torch

        m = key_states.shape[-2]
        if self.n + m > self.kb.shape[2]:  # out of room: double the buffer
            grow = max(m, self.kb.shape[2])
            self.kb = torch.cat([self.kb, self.kb.new_empty(self.kb.shape[:2] + (grow,) + self.kb.shape[3:])], dim=2)
            self.vb = torch.cat([self.vb, self.vb.new_empty(self.vb.shape[:2] + (grow,) + self.vb.shape[3:])], dim=2)
        self.kb[:, :, self.n : self.n + m] = key_states
        self.vb[:, :, self.n : self.n + m] = value_states
        self.n += m
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.n

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.n + query_length, 0

    def get_max_length(self) -> int:
        return -1


class _Batch:
    """Rows, their buffered cache and their attention mask, right-aligned."""

    def __init__(self, rows: list[_Row] | None = None, cache: Any = None, mask: Any = None) -> None:
        self.rows = rows or []
        self.cache = cache
        self.mask = mask

    def live(self) -> list[_Row]:
        return [r for r in self.rows if not r.dead]

    def kv(self, index: Any) -> list[tuple[Any, Any]]:
        return [(layer.keys[index], layer.values[index]) for layer in self.cache.layers]

    @staticmethod
    def stack(parts: list[tuple[list[_Row], list[tuple[Any, Any]], Any]]) -> "_Batch":
        """Left-pad every part to the longest, stack them, cut columns that are padding in every row."""
        import torch
        from transformers import DynamicCache

        T = max(mask.shape[1] for _, _, mask in parts)

        def pad(x: Any, dim: int) -> Any:
            if x.shape[dim] == T:
                return x
            shape = list(x.shape)
            shape[dim] = T - x.shape[dim]
            return torch.cat([x.new_zeros(shape), x], dim=dim)

        mask = torch.cat([pad(m, 1) for _, _, m in parts], dim=0)
        first = int((mask.sum(dim=0) > 0).nonzero()[0])
        mask = mask[:, first:]
        layers, layer_cls = [], _buffer_layer_class()
        for li in range(len(parts[0][1])):
            k = torch.cat([pad(kv[li][0], 2) for _, kv, _ in parts], dim=0)[:, :, first:]
            v = torch.cat([pad(kv[li][1], 2) for _, kv, _ in parts], dim=0)[:, :, first:]
            layers.append(layer_cls(k, v))
        cache = DynamicCache()
        cache.layers = layers
        return _Batch([r for rows, _, _ in parts for r in rows], cache, mask)


def _cache_keyword(model: Any) -> str:
    """The name under which ``model``'s forward takes its key/value cache."""
    import inspect

    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


def _out_cache(out: Any) -> Any:
    """The key/value cache a forward returned (``cache`` in newer transformers, else ``past_key_values``)."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values
