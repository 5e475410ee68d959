"""Gene-set collections, GMT reading, token selection procedure and pathway scores."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from rnafm.errors import InputError
from rnafm.pathways import (
    PathwayTokens,
    TokenConfig,
    list_collections,
    load_gene_sets,
    pathway_scores,
    read_gmt,
    select_tokens,
    write_gmt,
)

PAPER_GENES = 20_820  # genes of the RNA-FM / SEQUOIA cohorts
PAPER_SETS = 380  # GO molecular-function terms of the RNA-FM paper
PAPER_UNCOVERED = 3_645  # of those genes, in no term


def paper_scale_gene_sets(seed: int = 0) -> tuple[list[str], dict[str, list[str]]]:
    """A seeded stand-in for the paper's gene universe and GO MF terms, at their scale: 20,820
    genes, 380 sets with a long-tailed size distribution (a few under 5 genes, a few generic ones
    above the 2,000-gene cut, median about 150) and 3,645 genes in no set."""
    rng = np.random.default_rng(seed)
    genes = [f"GENE{i:05d}" for i in range(PAPER_GENES)]
    in_sets = rng.permutation(PAPER_GENES)[: PAPER_GENES - PAPER_UNCOVERED]
    sizes = np.clip(rng.lognormal(np.log(147), 1.2, PAPER_SETS), 2, 16_674).astype(int)
    sets = {
        f"GOMF_{i:03d}": [genes[j] for j in rng.choice(in_sets, size, replace=False)]
        for i, size in enumerate(sizes)
    }
    return genes, sets


def test_bundled_collections():
    assert list_collections() == ["hallmark", "go_mf", "go_bp", "reactome"]
    h = load_gene_sets("hallmark")
    assert len(h) == 50
    assert "HALLMARK_HYPOXIA" in h and "VEGFA" in h["HALLMARK_HYPOXIA"]
    assert load_gene_sets("Hallmark") == h
    assert all(len(v) == len(set(v)) for v in h.values())
    for name in ("go_mf", "reactome"):
        sets = load_gene_sets(name)
        assert len(sets) > 1000 and not any(k.startswith("KEGG") for k in sets)


def test_unknown_and_bad(tmp_path):
    with pytest.raises(InputError, match="bundled"):
        load_gene_sets("kegg")
    bad = tmp_path / "x.gmt.gz"
    bad.write_bytes(b"not gzip")
    with pytest.raises(InputError, match="x.gmt.gz"):
        load_gene_sets(bad)
    empty = tmp_path / "e.gmt"
    empty.write_text("only_a_name\n\n")
    with pytest.raises(InputError, match="no gene set"):
        read_gmt(empty)


def test_gmt_roundtrip(tmp_path):
    sets = {"A": ["g1", "g2"], "B": ["g3"]}
    for name in ("s.gmt", "s.gmt.gz"):
        write_gmt(tmp_path / name, sets)
        assert load_gene_sets(tmp_path / name) == sets
    with gzip.open(tmp_path / "s.gmt.gz", "rt") as f:
        assert f.readline() == "A\t\tg1\tg2\n"
    (tmp_path / "d.gmt").write_text("A\tdesc\tg1\tg1\t \tg2\r\nA\tagain\tg3\n")
    assert read_gmt(tmp_path / "d.gmt") == {"A": ["g1", "g2", "g3"]}


def _genes(n: int) -> list[str]:
    return [f"G{i:03d}" for i in range(n)]


def test_select_tokens_procedure():
    genes = _genes(40)
    g = genes
    sets = {
        "tiny": g[0:2],  # below min_size
        "huge": g[0:30],  # above max_size
        "big": g[0:10],
        "big_dup": g[0:9] + ["NOT_IN_COHORT"],  # Jaccard 0.9 with big: dropped (smaller)
        "mid": g[8:14],
        "other": g[20:25],
        "outside": ["X1", "X2", "X3"],
    }
    cfg = TokenConfig(
        min_size=3, max_size=12, max_tokens=10, jaccard_threshold=0.8, background_chunk_size=7
    )
    tok = select_tokens(genes, sets, cfg)
    assert tok.names[:3] == ["big", "mid", "other"]  # file order
    assert tok.n_pathways == 3
    np.testing.assert_array_equal(tok.members[0], np.arange(10))
    rest = sorted(set(range(40)) - set(range(14)) - set(range(20, 25)))  # 21 genes
    bg = [m.tolist() for m, b in zip(tok.members, tok.is_background, strict=True) if b]
    assert [len(m) for m in bg] == [7, 7, 7]
    assert sum(bg, []) == rest  # contiguous chunks in gene order
    assert tok.names[3:] == ["background_0", "background_1", "background_2"]
    covered = np.zeros(40, int)
    for m in tok.members:
        covered[m] += 1
    assert (covered >= 1).all()


def test_cap_by_greedy_coverage():
    g = _genes(30)
    sets = {"a": g[0:10], "b": g[0:8] + g[20:22], "c": g[10:16], "d": g[16:20]}
    tok = select_tokens(
        g, sets, TokenConfig(min_size=1, max_size=100, max_tokens=2, jaccard_threshold=1.0)
    )
    # a covers 10; then b adds 2, c adds 6, d adds 4 -> c
    assert tok.pathway_names == ["a", "c"]


def test_adjacency_and_json():
    g = _genes(12)
    sets = {"a": g[0:5], "b": g[4:8], "c": g[9:12]}
    tok = select_tokens(g, sets, TokenConfig(min_size=2, background_chunk_size=5))
    adj = tok.adjacency()
    m = tok.membership()
    oracle = np.array(
        [
            [
                bool(set(np.flatnonzero(m[i])) & set(np.flatnonzero(m[j]))) or i == j
                for j in range(len(tok))
            ]
            for i in range(len(tok))
        ]
    )
    np.testing.assert_array_equal(adj, oracle)
    assert adj[0, 1] and not adj[0, 2]
    back = PathwayTokens.from_dict(json.loads(json.dumps(tok.to_dict())))
    assert back.names == tok.names and back.genes == tok.genes
    np.testing.assert_array_equal(back.is_background, tok.is_background)
    for x, y in zip(back.members, tok.members, strict=True):
        np.testing.assert_array_equal(x, y)
        assert x.dtype == np.int64


def test_no_overlap_and_duplicates():
    with pytest.raises(InputError, match="shares a gene"):
        select_tokens(["A", "B"], {"s": ["X", "Y"]}, TokenConfig())
    with pytest.raises(InputError, match="duplicated"):
        select_tokens(["A", "A"], {"s": ["A"]}, TokenConfig())


def test_pathway_scores_oracle():
    g = _genes(9)
    tok = select_tokens(
        g, {"a": g[0:4], "b": g[3:6]}, TokenConfig(min_size=2, background_chunk_size=2)
    )
    v = np.random.default_rng(0).normal(size=(5, 9))
    s = pathway_scores(v, tok)
    assert s.shape == (5, 2)
    np.testing.assert_allclose(s[:, 0], v[:, 0:4].mean(1), rtol=1e-6)
    np.testing.assert_allclose(s[:, 1], v[:, 3:6].mean(1), rtol=1e-6)
    mu, sd = v.mean(0), v.std(0)
    z = pathway_scores(v, tok, mean=mu, std=sd)
    np.testing.assert_allclose(z[:, 1], ((v - mu) / sd)[:, 3:6].mean(1), rtol=1e-5)


def test_paper_scale_defaults(tmp_path):
    genes, sets = paper_scale_gene_sets()
    gmt = tmp_path / "go_mf_380.gmt.gz"
    write_gmt(gmt, sets)
    tok = select_tokens(genes, load_gene_sets(gmt), TokenConfig())
    assert 200 <= tok.n_pathways <= 400
    in_pathways = np.zeros(len(genes), bool)
    for m, b in zip(tok.members, tok.is_background, strict=True):
        if not b:
            in_pathways[m] = True
    assert in_pathways.mean() > 0.6
    bg_sizes = [len(m) for m, b in zip(tok.members, tok.is_background, strict=True) if b]
    assert max(bg_sizes) <= TokenConfig().background_chunk_size
    assert sum(bg_sizes) == (~in_pathways).sum()


@pytest.mark.parametrize("chunk", [1, 3, 256])
def test_single_background_token(chunk):
    """``background = single``: every gene in no kept set goes to ONE token, whatever the chunk."""
    from rnafm.pathways import BackgroundLayout

    g = _genes(20)
    sets = {"a": g[0:4], "b": g[3:6]}  # genes 6..19 are in no set
    single = select_tokens(
        g, sets, TokenConfig(min_size=2, background_chunk_size=chunk, background="single")
    )
    assert TokenConfig(background="single").background is BackgroundLayout.SINGLE
    assert single.is_background.sum() == 1 and single.names[-1] == "background_0"
    np.testing.assert_array_equal(single.members[-1], np.arange(6, 20))
    chunks = select_tokens(g, sets, TokenConfig(min_size=2, background_chunk_size=chunk))
    assert chunks.is_background.sum() == -(-14 // chunk)  # the default splits them
    assert single.names[:2] == chunks.names[:2] == ["a", "b"]
    covered = select_tokens(g[:6], sets, TokenConfig(min_size=2, background="single"))
    assert covered.is_background.sum() == 0  # no uncovered gene: no background token
    with pytest.raises(ValueError):
        TokenConfig(background="several")
