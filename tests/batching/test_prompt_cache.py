"""The prompt cache: its radix tree and byte budget, the disk cache's files, and the scheduler
restoring an evicted conversation (from host memory, from disk after a restart, per LoRA set)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

import llamabind as lb
from llamabind.batching import GenRequest, Scheduler, SchedulerConfig
from llamabind.batching.disk_cache import (
    DiskPromptCache,
    model_identity,
    read_state_file,
    safe_file_name,
    write_state_file,
)
from llamabind.batching.prompt_cache import HostPromptCache, TokenTrie, default_cache_ram_bytes
from llamabind.errors import StateError
from llamabind.generation.sampling import SamplingParams
from llamabind.multimodal import media_keys
from tests.helpers.core import SchedulerCollector, write_lora

GREEDY = SamplingParams(temperature=0.0)


def _chat(user: str) -> str:
    return f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"


A = _chat("Tell me about the history of the city of Rome and its emperors in a few words.")
B = _chat("What is the capital of France? Explain the geography of the country briefly.")
FOLLOW = "<|im_end|>\n<|im_start|>user\nAnd then?<|im_end|>\n<|im_start|>assistant\n"


# ------------------------------------------------------------------------------ the radix tree
def _brute_longest(keys: list[tuple[int, ...]], q: list[int]) -> int:
    best = 0
    for k in keys:
        n = 0
        while n < min(len(k), len(q)) and k[n] == q[n]:
            n += 1
        best = max(best, n)
    return best


def test_trie_longest_prefix_matches_a_scan_through_inserts_and_removals() -> None:
    rng = random.Random(7)
    trie: TokenTrie[tuple[int, ...]] = TokenTrie()
    keys: list[tuple[int, ...]] = []
    for step in range(600):
        if keys and rng.random() < 0.3:
            k = keys.pop(rng.randrange(len(keys)))
            assert trie.remove(k) == k
            assert trie.get(k) is None
        else:
            base = list(rng.choice(keys)) if keys and rng.random() < 0.7 else []
            k = tuple(
                base[: rng.randrange(len(base) + 1)] + [rng.randrange(4) for _ in range(rng.randrange(1, 6))]
            )
            if k not in keys:
                assert trie.insert(k, k) is None
                keys.append(k)
        assert len(trie) == len(keys)
        q = list(rng.choice(keys)) if keys and step % 2 else []
        q = q[: rng.randrange(len(q) + 1)] + [rng.randrange(4) for _ in range(3)]
        value, n = trie.longest(q)
        assert n == _brute_longest(keys, q)
        if n:
            assert value is not None and value[:n] == tuple(q[:n])
        else:
            assert value is None
    for k in keys:
        assert trie.get(k) == k
        assert k in trie.prefixes([*k, 9])


def test_trie_prefers_the_shortest_entry_and_lists_prefixes() -> None:
    trie: TokenTrie[str] = TokenTrie()
    trie.insert([1, 2, 3, 4, 5], "long")
    trie.insert([1, 2, 3], "short")
    trie.insert([1, 2, 9], "other")
    assert trie.longest([1, 2, 3, 7]) == ("short", 3)
    assert trie.longest([1, 2, 3, 4, 5, 6]) == ("long", 5)
    assert trie.longest([1, 2, 8])[1] == 2
    assert trie.longest([5]) == (None, 0)
    assert trie.prefixes([1, 2, 3, 4, 5]) == ["short", "long"]
    assert trie.insert([1, 2, 3], "again") == "short"
    trie.remove([1, 2, 3])
    assert trie.longest([1, 2, 3]) in (("long", 3), ("other", 2))
    with pytest.raises(ValueError):
        trie.insert([], "x")


# ---------------------------------------------------------------------- the host-memory cache
def test_byte_budget_is_never_exceeded_and_lru_evicts() -> None:
    cache = HostPromptCache(1000)
    rng = random.Random(1)
    for i in range(200):
        tokens = [i, *(rng.randrange(50) for _ in range(5))]
        cache.put("", tokens, bytes(rng.randrange(1, 400)))
        assert cache.used_bytes <= 1000
        assert cache.used_bytes == sum(e.nbytes for e in cache.entries())
    assert cache.evictions > 0
    cache.clear()
    a = cache.put("", [1, 1], bytes(300))
    b = cache.put("", [2, 2], bytes(300))
    c = cache.put("", [3, 3], bytes(300))
    assert a is not None and b is not None and c is not None
    cache.touch(a)  # a is now the most recently used: b goes first
    cache.put("", [4, 4], bytes(300))
    assert [e.tokens for e in cache.entries()] == [(3, 3), (1, 1), (4, 4)]
    assert cache.put("", [5], bytes(1001)) is None  # larger than the whole budget
    assert cache.used_bytes == 900


def test_a_longer_entry_replaces_its_prefixes() -> None:
    cache = HostPromptCache(10_000)
    cache.put("", [1, 2, 3], bytes(10))
    cache.put("", [1, 2, 3, 4, 5], bytes(20))
    assert [e.tokens for e in cache.entries()] == [(1, 2, 3, 4, 5)]
    assert cache.used_bytes == 20
    assert cache.covers("", [1, 2, 3]) and not cache.covers("", [1, 2, 4])


def test_media_and_adapters_are_part_of_the_key() -> None:
    cache = HostPromptCache(10_000)
    text = [10, 11, 12]
    cat, dog = media_keys("sha-cat", 4), media_keys("sha-dog", 4)
    cache.put("", text + cat + [13, 14], b"cat")
    entry, n = cache.lookup("", text + dog + [13, 14])
    assert n == len(text)  # another image: only the text before it matches
    entry, n = cache.lookup("", text + cat + [13, 99])
    assert entry is not None and entry.data == b"cat" and n == len(text) + len(cat) + 1
    # the same tokens under another adapter set share nothing
    assert cache.lookup('[["lora.gguf", 1.0]]', text + cat + [13, 14]) == (None, 0)
    cache.put('[["lora.gguf", 1.0]]', text + cat + [13, 14], b"lora")
    assert cache.lookup("", text + cat)[0].data == b"cat"  # type: ignore[union-attr]
    assert cache.lookup('[["lora.gguf", 1.0]]', text + cat)[0].data == b"lora"  # type: ignore[union-attr]


def test_default_size_is_llama_servers_but_bounded_by_memory() -> None:
    assert 0 < default_cache_ram_bytes() <= 8192 << 20


# ----------------------------------------------------------------------------- the disk cache
IDENT = {"model": "m.gguf", "model_size": 1, "ggml_commit": "x"}


def test_disk_cache_survives_a_restart_and_ignores_bad_files(tmp_path: Path) -> None:
    d = DiskPromptCache(tmp_path, 1 << 20, IDENT)
    d.put("", [1, 2, 3, 4], b"state-1234")
    d.put("", [7, 8, -5], b"state-78m")
    d.close()
    (tmp_path / "junk.lbseq").write_bytes(b"not a state file at all")
    write_state_file(tmp_path / "other.lbseq", {**IDENT, "model": "other.gguf"}, "", [1, 2, 3, 4, 5], b"x")
    d2 = DiskPromptCache(tmp_path, 1 << 20, IDENT)
    assert len(d2) == 2 and d2.ignored == 2
    entry, n = d2.lookup("", [1, 2, 3, 9])
    assert entry is not None and n == 3
    sf = d2.load(entry)
    assert sf is not None and sf.data == b"state-1234" and sf.tokens == [1, 2, 3, 4]
    # a damaged file is dropped (and deleted), never handed on
    other, _ = d2.lookup("", [7, 8, -5])
    assert other is not None
    raw = bytearray(other.path.read_bytes())
    raw[-1] ^= 0xFF
    other.path.write_bytes(bytes(raw))
    assert d2.load(other) is None
    assert d2.lookup("", [7, 8, -5]) == (None, 0) and not other.path.exists()
    # a truncated file is ignored at start-up
    entry.path.write_bytes(entry.path.read_bytes()[:-3])
    d2.close()
    d3 = DiskPromptCache(tmp_path, 1 << 20, IDENT)
    assert len(d3) == 0
    d3.close()


def test_disk_cache_size_bound(tmp_path: Path) -> None:
    d = DiskPromptCache(tmp_path, 3000, IDENT)
    for i in range(10):
        d.put("", [i, i, i], bytes(900))
        d.flush()
        assert d.used_bytes <= 3000
        assert sum(p.stat().st_size for p in tmp_path.glob("*.lbseq")) <= 3000
    assert d.evictions > 0 and d.lookup("", [9, 9, 9])[1] == 3 and d.lookup("", [0, 0, 0])[1] == 0
    d.close()


def test_state_files_refuse_other_identities_and_names(tmp_path: Path) -> None:
    p = tmp_path / "s.bin"
    write_state_file(p, IDENT, "", [5, 6], b"abc")
    assert read_state_file(p, IDENT).tokens == [5, 6]
    with pytest.raises(StateError, match="another model"):
        read_state_file(p, {**IDENT, "model_size": 2})
    for bad in ["../x", "a/b", ".hidden", "", "..", "a\\b", "x" * 300, None, "a\x00b"]:
        with pytest.raises(ValueError):
            safe_file_name(bad)
    assert safe_file_name("slot-0.bin") == "slot-0.bin"


# ----------------------------------------------------------------------------- the scheduler
def _gen(sch: Scheduler, prompt: list[int], n: int = 6) -> SchedulerCollector:
    out = SchedulerCollector()
    sch.submit(GenRequest(prompt, out, GREEDY, max_tokens=n))
    assert out.done.wait(300)
    assert out.error is None, out.error
    return out


def _cfg(**kw: Any) -> SchedulerConfig:
    base: dict[str, Any] = {
        "parallel": 1,
        "ctx_per_slot": 512,
        "n_batch": 256,
        "n_threads": 1,
        "prompt_cache_min": 8,
        "cache_ram_bytes": 64 << 20,
    }
    base.update(kw)
    return SchedulerConfig(**base)


def _rotation(sch: Scheduler, model: lb.Model) -> tuple[list[int], list[int], SchedulerCollector, int]:
    """Conversation A, then B takes A's slot, then A's follow-up: (A's reply, the follow-up
    prompt, its output, llama.cpp's prompt tokens evaluated for it)."""
    a = _gen(sch, model.tokenize(A)).tokens
    _gen(sch, model.tokenize(B))
    follow = model.tokenize(A) + a + model.tokenize(FOLLOW, add_special=False)
    before = sch.run_in_engine(sch.ctx.perf).n_p_eval
    out = _gen(sch, follow)
    return a, follow, out, sch.run_in_engine(sch.ctx.perf).n_p_eval - before


def test_an_evicted_conversation_is_restored_and_only_its_suffix_decoded(model: lb.Model) -> None:
    with Scheduler(model, _cfg()) as sch:
        a, follow, out, n_p_eval = _rotation(sch, model)
        st = sch.stats
        assert out.event is not None
        cached = out.event.usage.cached_tokens
        assert st.prompt_cache_hits_total == 1 and st.prompt_cache_saved_total >= 1
        assert st.prompt_cache_restored_tokens_total == cached
        assert cached >= len(model.tokenize(A)) + len(a) - 1  # the whole first turn
        assert n_p_eval == len(follow) - cached  # llama.cpp evaluated only the new suffix
        assert 0 < st.prompt_cache_bytes <= 64 << 20 and st.prompt_cache_entries >= 1
    with Scheduler(model, _cfg(cache_ram_bytes=0)) as sch:
        a0, follow0, out0, n_p_eval0 = _rotation(sch, model)
        assert sch.stats.prompt_cache_hits_total == 0 and sch.stats.prompt_cache_bytes == 0
        assert n_p_eval0 > n_p_eval
    # a cache hit never changes the output
    assert (a0, follow0, out0.tokens) == (a, follow, out.tokens)


def test_states_saved_under_other_adapters_are_not_restored(model: lb.Model, tmp_path: Path) -> None:
    write_lora(tmp_path / "zero.gguf", zero_b=True, layers=range(30))
    adapter = lb.LoraAdapter(model, tmp_path / "zero.gguf")
    try:
        with Scheduler(model, _cfg()) as sch:
            _gen(sch, model.tokenize(A), 2)
            _gen(sch, model.tokenize(B), 2)  # A's state saved without adapters
            sch.run_in_engine(lambda: sch.ctx.set_loras([(adapter, 1.0)]))
            _gen(sch, model.tokenize(A), 2)
            assert sch.stats.prompt_cache_hits_total == 0  # not restored under the adapter
            sch.run_in_engine(lambda: sch.ctx.set_loras([]))
            out = _gen(sch, model.tokenize(A), 2)
            assert sch.stats.prompt_cache_hits_total == 1
            assert out.event is not None and out.event.usage.cached_tokens == len(model.tokenize(A)) - 1
    finally:
        adapter.close()


SYSTEM = (
    "<|im_start|>system\nYou are a careful assistant for a small library. Answer in one short "
    "sentence, name the shelf of every book you mention, and never invent titles.<|im_end|>\n"
)


def test_a_restart_reuses_the_system_prompt_from_disk(model: lb.Model, tmp_path: Path) -> None:
    cfg = _cfg(cache_ram_bytes=0, cache_disk_dir=str(tmp_path))
    first = model.tokenize(SYSTEM + _chat("Where are the atlases?"))
    second = model.tokenize(SYSTEM + _chat("Do you have poetry?"))
    with Scheduler(model, cfg) as sch:
        _gen(sch, first, 2)
    assert list(tmp_path.glob("*.lbseq"))  # written at shutdown
    with Scheduler(model, cfg) as sch:
        out = _gen(sch, second, 4)
        st = sch.stats
        assert st.prompt_cache_hits_total == st.prompt_cache_disk_hits_total == 1
        assert out.event is not None
        n_system = len(model.tokenize(SYSTEM))
        assert out.event.usage.cached_tokens >= n_system
    # the restored state is the one the slot had: the output equals that of one process that
    # kept the first conversation in its slot (no cache, no restart)
    with Scheduler(model, _cfg(cache_ram_bytes=0)) as sch:
        _gen(sch, first, 2)
        kept = _gen(sch, second, 4)
        assert kept.tokens == out.tokens
        assert kept.event is not None and kept.event.usage.cached_tokens == out.event.usage.cached_tokens
    # a state file of another model is ignored, not restored
    for p in tmp_path.glob("*.lbseq"):
        sf = read_state_file(p, _identity(model))
        write_state_file(p, {"model": "other"}, sf.namespace, sf.tokens, sf.data)
    with Scheduler(model, cfg) as sch:
        _gen(sch, second, 1)
        assert sch.stats.prompt_cache_hits_total == 0


def _identity(model: lb.Model) -> dict[str, Any]:
    return model_identity(model.path, "f16", "f16")
