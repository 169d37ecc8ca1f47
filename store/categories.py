"""The finance categories: one canonical list, with synonyms in Portuguese and English.

A model may send any synonym ("mercado", "supermercado", "groceries"); the tools store the
canonical name (`groceries`) and report it in the user's language ("mercado"), so one kind of
spending is always one line of a report. The evaluation scorer compares categories the same way.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass


@dataclass(frozen=True)
class Category:
    """One canonical category, its display names and the words that mean it."""

    name: str
    """The canonical name, stored in `finance_entries.category`."""
    pt: str
    """What a Portuguese-speaking user reads."""
    en: str
    """What an English-speaking user reads."""
    synonyms: tuple[str, ...] = ()
    """Other words for it, in either language (accents and case do not matter)."""


CATEGORIES: tuple[Category, ...] = (
    Category(
        "groceries",
        "mercado",
        "groceries",
        (
            "supermercado",
            "feira",
            "hortifruti",
            "sacolao",
            "acougue",
            "grocery",
            "supermarket",
            "compras do mes",
        ),
    ),
    Category(
        "food",
        "alimentação",
        "food",
        (
            "alimentacao",
            "comida",
            "restaurante",
            "almoco",
            "jantar",
            "lanche",
            "ifood",
            "delivery",
            "padaria",
            "cafe",
            "pizza",
            "restaurant",
            "restaurants",
            "lunch",
            "dinner",
            "breakfast",
            "coffee",
            "snack",
            "eating out",
            "dining",
        ),
    ),
    Category(
        "transport",
        "transporte",
        "transport",
        (
            "uber",
            "99",
            "taxi",
            "onibus",
            "metro",
            "gasolina",
            "combustivel",
            "estacionamento",
            "pedagio",
            "transportation",
            "bus",
            "fuel",
            "petrol",
            "subway",
            "train",
            "parking",
            "toll",
            "car",
            "carro",
        ),
    ),
    Category(
        "housing",
        "moradia",
        "housing",
        ("aluguel", "condominio", "casa", "iptu", "rent", "mortgage", "home", "house"),
    ),
    Category(
        "bills",
        "contas",
        "bills",
        (
            "conta",
            "luz",
            "energia",
            "agua",
            "internet",
            "celular",
            "telefone",
            "gas",
            "gas de cozinha",
            "botijao",
            "conta de luz",
            "conta de energia",
            "conta de agua",
            "conta de gas",
            "conta de internet",
            "conta de telefone",
            "conta de celular",
            "utilities",
            "utility",
            "electricity",
            "water",
            "phone",
            "bill",
            "electricity bill",
            "power bill",
            "water bill",
            "gas bill",
            "cooking gas",
            "phone bill",
        ),
    ),
    Category(
        "health",
        "saúde",
        "health",
        (
            "saude",
            "farmacia",
            "remedio",
            "remedios",
            "medico",
            "consulta",
            "dentista",
            "exame",
            "plano de saude",
            "pharmacy",
            "medicine",
            "doctor",
            "dentist",
            "drugstore",
            "healthcare",
        ),
    ),
    Category(
        "education",
        "educação",
        "education",
        (
            "educacao",
            "escola",
            "faculdade",
            "curso",
            "livro",
            "livros",
            "mensalidade",
            "school",
            "college",
            "course",
            "tuition",
            "books",
        ),
    ),
    Category(
        "leisure",
        "lazer",
        "leisure",
        (
            "cinema",
            "netflix",
            "spotify",
            "show",
            "bar",
            "festa",
            "viagem",
            "entretenimento",
            "entertainment",
            "movies",
            "movie",
            "concert",
            "party",
            "travel",
            "fun",
        ),
    ),
    Category(
        "shopping",
        "compras",
        "shopping",
        (
            "roupa",
            "roupas",
            "presente",
            "presentes",
            "eletronicos",
            "clothes",
            "clothing",
            "gift",
            "gifts",
            "electronics",
        ),
    ),
    Category(
        "salary",
        "salário",
        "salary",
        ("salario", "holerite", "paycheck", "wage", "wages"),
    ),
    Category(
        "freelance", "freela", "freelance", ("freelas", "bico", "servico extra", "side job", "gig")
    ),
    Category("refund", "reembolso", "refund", ("estorno", "devolucao", "reimbursement")),
    Category("other", "outros", "other", ("outro", "outra", "outras", "diversos", "misc")),
)
"""Every category a finance entry may have; `other` when none fits."""

NAMES: tuple[str, ...] = tuple(c.name for c in CATEGORIES)
"""The canonical names, in order."""


def _fold(text: str) -> str:
    """Lower-case `text`, drop accents and squeeze spaces, for comparing words."""
    plain = unicodedata.normalize("NFKD", text.casefold())
    plain = "".join(ch for ch in plain if not unicodedata.combining(ch))
    return " ".join(plain.replace("-", " ").replace("_", " ").split())


_BY_WORD: dict[str, Category] = {
    _fold(word): category
    for category in CATEGORIES
    for word in (category.name, category.pt, category.en, *category.synonyms)
}


def words() -> dict[str, str]:
    """Return every word or phrase that names a category (folded: lower case, no accents,
    single spaces), with the canonical name it stands for."""
    return {word: category.name for word, category in _BY_WORD.items()}


def find(text: str) -> Category | None:
    """Return the category `text` names (any synonym, any case or accents), or None."""
    return _BY_WORD.get(_fold(text))


def canonical(text: str) -> str:
    """Return the canonical name of the category `text` names, or raise `ValueError`.

    The message lists what may be sent, so a model can correct its call.
    """
    found = find(text)
    if found is None:
        raise ValueError(
            f"{text!r} is not a known category. Use one of: {allowed()}; "
            '"other" when none fits (say what it was in the description).'
        )
    return found.name


def display(name: str, language: str) -> str:
    """Return how the category `name` reads in `language` ("pt" or "en"); unknown as stored."""
    found = find(name)
    if found is None:
        return name
    return found.en if language == "en" else found.pt


def allowed() -> str:
    """List the categories as a model should read them: canonical name (pt name)."""
    return ", ".join(f"{c.name} ({c.pt})" for c in CATEGORIES)
