"""Prompt text. Placeholders are filled by the nodes that use them, with `render`."""

import re

_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


def render(template: str, **values: str) -> str:
    """Fill `{name}` placeholders that `values` names; leave any other braces as written.

    Tenants write their own prompts: a JSON example or an unknown `{name}` must not break a run.
    """
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


SYSTEM_PROMPT = """You are the WhatsApp assistant of {tenant_name}.
You help {user_name} keep track of their money and remember the people and dates in their life.
Answer in {language_name}, briefly, in a friendly tone suited to WhatsApp: short paragraphs,
no markdown headings or tables. If you do not know something, say so.
The user's local time is {local_time}.
What you can do for this user: {capabilities}.
Offer only these; if asked for something else, say it is not part of their plan.
{persona}"""

CAPABILITIES_MARKER = "What you can do for this user:"
"""Starts the system prompt's line that lists the user's features (the offline model reads it)."""

FEATURE_NAMES = {
    "finance": {"pt": "controlar seus gastos e receitas", "en": "track your spending and income"},
    "relationships": {
        "pt": "lembrar pessoas e datas importantes",
        "en": "remember people and important dates",
    },
    "long_term_memory": {"pt": "lembrar o que você me contar", "en": "remember what you tell me"},
    "audio_transcription": {"pt": "entender áudios", "en": "understand voice notes"},
    "human_handoff": {"pt": "chamar um atendente humano", "en": "bring in a human agent"},
    "reminders": {"pt": "mandar lembretes", "en": "send you reminders"},
}
"""How each feature is offered to the user, in each language."""

NO_FEATURES = {"pt": "conversar", "en": "chat"}

LANGUAGE_NAMES = {"pt": "Brazilian Portuguese", "en": "English"}

FALLBACK_REPLY = {
    "pt": "Desculpe, não consegui responder agora. Pode tentar de novo?",
    "en": "Sorry, I could not answer just now. Could you try again?",
}
