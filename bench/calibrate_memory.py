"""Calibrate MEMORY_MIN_SCORE: score real pt/en question-fact pairs with the configured embedder.

Prints the cosine scores of relevant and non-relevant pairs, and for each candidate threshold
how many questions keep their best relevant memory and how many off-topic messages ("bom dia",
"quanto gastei este mês?") still recall something. Run it when the embedding model changes;
the numbers behind the default are in `graphs/settings.py`.

Run: `.venv/bin/python bench/calibrate_memory.py`.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from store.embeddings import default_embeddings

FACTS = {
    "dog_pt": "O cachorro do usuário se chama Rex.", "allergy_pt": "Sou alérgica a amendoim.",
    "job_pt": "Trabalho como enfermeira no hospital São Lucas.",
    "wife_pt": "Minha esposa se chama Carla.", "city_pt": "Moro em Belo Horizonte.",
    "nick_pt": "Prefiro que me chamem de Zé.",
    "car_pt": "Estou economizando para comprar um carro.",
    "veg_pt": "Sou vegetariano desde 2019.", "kids_pt": "Tenho dois filhos, Pedro e Ana.",
    "team_pt": "Meu time é o Corinthians.", "gym_pt": "Faço academia às segundas e quartas.",
    "bday_pt": "Meu aniversário é em 3 de maio.", "dog_en": "My dog is named Biscuit.",
    "allergy_en": "I am allergic to penicillin.",
    "job_en": "I work as a software engineer at a bank.", "wife_en": "My wife's name is Julia.",
    "city_en": "I live in Lisbon.", "short_en": "I prefer short answers.",
    "trip_en": "I am saving money for a trip to Japan.", "meat_en": "I don't eat meat.",
    "piano_en": "My daughter plays the piano.", "team_en": "I support Manchester United.",
    "run_en": "I go running every morning.", "mom_en": "My mother lives in Porto.",
    "coffee_pt": "Não tomo café depois das 18h.", "cat_en": "I have a cat called Luna.",
    "diab_pt": "Meu pai tem diabetes.", "lang_en": "I am learning German.",
}  # fmt: skip
QUESTIONS = [
    ("qual o nome do meu cachorro?", {"dog_pt", "dog_en"}), ("posso comer paçoca?", {"allergy_pt"}),
    ("onde eu trabalho?", {"job_pt", "job_en"}),
    ("como se chama minha mulher?", {"wife_pt", "wife_en"}),
    ("em que cidade eu moro?", {"city_pt", "city_en"}), ("como prefiro ser chamado?", {"nick_pt"}),
    ("para que estou juntando dinheiro?", {"car_pt", "trip_en"}),
    ("me sugere um prato pro jantar", {"veg_pt", "meat_en", "allergy_pt"}),
    ("quantos filhos eu tenho?", {"kids_pt", "piano_en"}),
    ("pra qual time eu torço?", {"team_pt", "team_en"}),
    ("quando eu treino?", {"gym_pt", "run_en"}),
    ("quando é meu aniversário?", {"bday_pt"}), ("what's my dog's name?", {"dog_pt", "dog_en"}),
    ("which medicine am I allergic to?", {"allergy_en", "allergy_pt"}),
    ("what is my job?", {"job_pt", "job_en"}), ("what's my wife called?", {"wife_pt", "wife_en"}),
    ("where do I live?", {"city_pt", "city_en"}),
    ("how long should your answers be?", {"short_en"}),
    ("what am I saving for?", {"car_pt", "trip_en"}),
    ("suggest a dinner recipe for me", {"veg_pt", "meat_en", "allergy_pt"}),
    ("what instrument does my daughter play?", {"piano_en"}),
    ("which football team do I support?", {"team_pt", "team_en"}),
    ("what exercise do I do?", {"gym_pt", "run_en"}), ("where does my mom live?", {"mom_en"}),
    ("posso tomar um espresso agora à noite?", {"coffee_pt"}),
    ("tenho algum animal de estimação?", {"dog_pt", "dog_en", "cat_en"}),
    ("meu pai pode comer doce?", {"diab_pt"}), ("que idioma estou estudando?", {"lang_en"}),
]  # fmt: skip
OFF_TOPIC = [
    "quanto gastei este mês?", "registra um gasto de 45 reais no mercado", "que horas são?",
    "me lembra de pagar a conta de luz amanhã", "oi, tudo bem?", "what's my balance?", "hello!",
    "add an expense of 20 dollars for lunch", "qual a previsão do tempo?", "obrigado!",
    "delete transaction 12", "list my reminders", "quero falar com um atendente", "bom dia",
    "recebi 3000 de salário", "gastos por categoria do mês passado",
    "show my last 10 transactions", "cancela o lembrete 4", "ok", "valeu, até mais",
]  # fmt: skip


def main() -> int:
    """Score every pair and print the trade-off of each threshold."""
    model = default_embeddings()
    keys = list(FACTS)
    passages = np.array(model.embed_documents([FACTS[k] for k in keys]))
    relevant, other, best, top1 = [], [], [], 0
    for question, wanted in QUESTIONS:
        scores = passages @ np.array(model.embed_query(question))
        hits = [scores[keys.index(k)] for k in wanted]
        relevant += hits
        other += [s for k, s in zip(keys, scores, strict=True) if k not in wanted]
        best.append(max(hits))
        top1 += keys[int(np.argmax(scores))] in wanted
    off = np.array([max(passages @ np.array(model.embed_query(q))) for q in OFF_TOPIC])
    rel, oth, best_a = np.array(relevant), np.array(other), np.array(best)
    print(f"relevant pairs ({len(rel)}): min {rel.min():.3f} p25 {np.percentile(rel, 25):.3f} "
          f"median {np.median(rel):.3f}")  # fmt: skip
    print(f"non-relevant pairs ({len(oth)}): median {np.median(oth):.3f} "
          f"p90 {np.percentile(oth, 90):.3f} p99 {np.percentile(oth, 99):.3f}")  # fmt: skip
    print(f"best memory is a relevant one for {top1}/{len(QUESTIONS)} questions")
    lo, hi = np.percentile(oth, 50), max(rel.max(), off.max())
    for threshold in np.linspace(lo, hi, 12):
        print(
            f"threshold {threshold:.3f}: questions keeping their best memory "
            f"{np.mean(best_a >= threshold):4.0%}, non-relevant pairs passing "
            f"{np.mean(oth >= threshold):5.1%}, off-topic messages recalling something "
            f"{np.mean(off >= threshold):4.0%}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
