"""What the WhatsApp channel decides on its own, whatever the provider: opt-out keywords, the
24-hour window, requests to erase one's data, and the notices that answer them."""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, datetime, timedelta

from graphs.language import Language, fold

OPT_OUT_WORDS = frozenset({"stop", "parar", "sair", "cancelar"})
OPT_IN_WORDS = frozenset({"start", "voltar"})


def _keyword(body: str) -> str:
    text = unicodedata.normalize("NFKC", body).strip().strip(".!").strip().lower()
    return text if re.fullmatch(r"[a-z]+", text) else ""


def is_opt_out(body: str) -> bool:
    """Whether the message is an opt-out keyword alone (STOP, PARAR, SAIR, CANCELAR; any case)."""
    return _keyword(body) in OPT_OUT_WORDS


def is_opt_in(body: str) -> bool:
    """Whether the message is an opt-in keyword alone (START, VOLTAR; any case)."""
    return _keyword(body) in OPT_IN_WORDS


WINDOW = timedelta(hours=24)
"""WhatsApp's customer-service window: free-form messages only this long after the user's last."""


def window_open(last_inbound_at: datetime | None) -> bool:
    """Whether a free-form message may be sent now (else only an approved template)."""
    return last_inbound_at is not None and datetime.now(UTC) - last_inbound_at < WINDOW


DATA_REQUEST_PHRASES = (
    "apagar meus dados", "apague meus dados", "excluir meus dados", "exclua meus dados",
    "deletar meus dados", "delete meus dados", "remover meus dados", "apagar os meus dados",
    "excluir os meus dados", "delete my data", "erase my data", "remove my data",
    "delete all my data", "erase all my data",
)  # fmt: skip
"""Requests for one's data to be erased, with accents and punctuation ignored."""
_MAX_REQUEST_WORDS = 12


def _folded(body: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9]+", " ", fold(body)).split())


def is_data_request(body: str) -> bool:
    """Whether a short message asks for the user's data to be erased ("apagar meus dados",
    "delete my data"...); answered with how to request it, never by the model."""
    text = _folded(body)
    if not text or len(text.split()) > _MAX_REQUEST_WORDS:
        return False
    padded = f" {text} "
    return any(f" {phrase} " in padded for phrase in DATA_REQUEST_PHRASES)


NOTICES: dict[str, dict[Language, str]] = {
    "opt_out": {
        "pt": "Pronto, você não vai mais receber mensagens minhas. Se mudar de ideia, "
        "é só enviar VOLTAR.",
        "en": "Done, you will not get any more messages from me. If you change your mind, "
        "just send START.",
    },
    "opt_in": {
        "pt": "Que bom ter você de volta! Como posso ajudar?",
        "en": "Welcome back! How can I help?",
    },
    "not_enabled": {
        "pt": "Olá! Este número ainda não está habilitado para você. "
        "Fale com quem te indicou este serviço para ter acesso.",
        "en": "Hi! This number is not enabled for you yet. "
        "Please ask whoever gave you this service for access.",
    },
    "over_quota": {
        "pt": "Você chegou ao limite de mensagens de hoje. Amanhã eu volto a responder!",
        "en": "You have reached today's message limit. I will answer again tomorrow!",
    },
    "over_budget": {
        "pt": "Desculpe, atingi o limite de uso deste serviço por enquanto e não consigo "
        "responder agora. Se precisar, é só pedir para falar com um atendente.",
        "en": "Sorry, this service has reached its usage limit for now, so I can't answer "
        "right now. If you need to, just ask to talk to a person.",
    },
    "unsupported": {
        "pt": "Desculpe, ainda não consigo entender esse tipo de mensagem. "
        "Pode me escrever em texto?",
        "en": "Sorry, I can't understand this kind of message yet. Could you write it as text?",
    },
    "audio": {
        "pt": "Recebi seu áudio, mas ainda não consigo ouvi-lo. Pode me escrever em texto?",
        "en": "I got your voice note, but I can't listen to it yet. Could you write it as text?",
    },
    "audio_failed": {
        "pt": "Recebi seu áudio, mas não consegui entendê-lo. Pode me escrever em texto?",
        "en": "I got your voice note, but I couldn't make it out. Could you write it as text?",
    },
    "media": {
        "pt": "Recebi seu arquivo, mas ainda não consigo abri-lo. Pode me contar em texto?",
        "en": "I got your file, but I can't open it yet. Could you tell me in text?",
    },
    "data_request": {
        "pt": "Você pode pedir uma cópia dos seus dados ou que eles sejam apagados (LGPD). "
        "Por segurança, eu não apago dados por aqui: faça o pedido à empresa responsável por "
        "este atendimento, pelos canais oficiais dela, informando este número de WhatsApp.",
        "en": "You can ask for a copy of your data or for it to be deleted (LGPD/GDPR). For "
        "your safety I don't delete data through this chat: send the request to the company "
        "that runs this service, through its official channels, with this WhatsApp number.",
    },
}
