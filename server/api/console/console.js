// The Conversa support console: the handoff queue, one conversation, replies, claim, hand back
// and close, all through the support API with the agent's bearer token.
//
// Safety: every piece of text from the API is written with textContent (never innerHTML), and
// the page's Content-Security-Policy allows no inline script. The token lives in sessionStorage
// (this tab only) and is read from a `#token=...` link once, then removed from the address bar.
"use strict";

(() => {
  const TOKEN_KEY = "conversa.support.token";
  const TENANT_KEY = "conversa.support.tenant";
  const REFRESH_MS = 4000;
  const WITH_STAFF = ["HANDOFF", "WAITING_USER"];
  const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

  const session = {
    token: null,
    tenant: null,
    claims: {},
    screen: "signin",
    conversationId: null,
    view: null,
    replyKey: null,
    busy: false,
  };

  const $ = (id) => document.getElementById(id);

  /** An error the API answered, with its stable code and its message. */
  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  // --- Token -------------------------------------------------------------------------------------

  /** The token's claims (not verified: the API does that), or null when it is not a JWT. */
  function decodeClaims(token) {
    const parts = token.split(".");
    if (parts.length !== 3) return null;
    try {
      let b64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
      b64 += "=".repeat((4 - (b64.length % 4)) % 4);
      const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      const claims = JSON.parse(new TextDecoder().decode(bytes));
      return claims && typeof claims === "object" ? claims : null;
    } catch {
      return null;
    }
  }

  function newKey() {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return "console-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  // --- The API -----------------------------------------------------------------------------------

  async function api(method, path, body, headers = {}) {
    const base = `/api/v1/tenants/${encodeURIComponent(session.tenant)}/support`;
    const init = {
      method,
      cache: "no-store",
      headers: { Authorization: `Bearer ${session.token}`, Accept: "application/json", ...headers },
    };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(base + path, init);
    } catch {
      throw new ApiError(0, "unreachable", "Cannot reach the server; check that it is running.");
    }
    if (response.status === 204) return null;
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    if (!response.ok) {
      const error = data && data.error ? data.error : {};
      throw new ApiError(
        response.status,
        error.code || `http_${response.status}`,
        error.message || `The server answered ${response.status} ${response.statusText}.`,
      );
    }
    return data;
  }

  // --- Messages to the agent ---------------------------------------------------------------------

  function showError(error) {
    $("error-code").textContent = error.code ? `${error.code}:` : "";
    $("error-message").textContent = error.message || String(error);
    $("error").dataset.code = error.code || "";
    $("error").hidden = false;
  }

  function clearError() {
    $("error").hidden = true;
    $("error-code").textContent = "";
    $("error-message").textContent = "";
    $("error").dataset.code = "";
  }

  function say(text) {
    $("status").textContent = text;
  }

  /** Show what went wrong; a refused token signs the agent out. */
  function failed(error) {
    showError(error);
    if (error instanceof ApiError && error.status === 401) signOut(false);
  }

  // --- Formatting --------------------------------------------------------------------------------

  function when(value) {
    if (!value) return "—";
    const date = new Date(value);
    return Number.isNaN(date.getTime()) ? String(value) : date.toLocaleString();
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
    return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
  }

  function el(tag, text, attrs = {}) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
    return node;
  }

  function userLabel(item) {
    const name = item.user_name || "WhatsApp user";
    return item.wa_id ? `${name} (+${item.wa_id})` : name;
  }

  const PURPOSES = {
    reply: "Assistant",
    handoff: "Assistant (handoff notice)",
    notice: "Assistant (notice)",
    reminder: "Assistant (reminder)",
    opt_out: "Assistant (opt-out)",
    opt_in: "Assistant (opt-in)",
  };

  function author(message, view) {
    if (message.direction === "inbound") return `${view.user_name || "User"} (user)`;
    if (message.purpose === "staff") return `${message.sent_by || "Staff"} (staff)`;
    return PURPOSES[message.purpose] || "Assistant";
  }

  // --- Screens -----------------------------------------------------------------------------------

  function show(screen) {
    session.screen = screen;
    $("signin-screen").hidden = screen !== "signin";
    $("queue-screen").hidden = screen !== "queue";
    $("conversation-screen").hidden = screen !== "conversation";
    $("whoami").hidden = screen === "signin";
  }

  async function signIn(token, tenantTyped) {
    clearError();
    say("");
    token = token.trim().replace(/^bearer\s+/i, "");
    if (!token) {
      showError({ code: "missing_token", message: "Paste a token first." });
      return;
    }
    const claims = decodeClaims(token) || {};
    const tenant = (tenantTyped || "").trim() || claims.tenant_id || "";
    if (!tenant) {
      showError({
        code: "no_tenant",
        message: decodeClaims(token)
          ? "This token names no tenant (a platform_admin token): type the tenant's id too."
          : "That is not a token: paste it whole, exactly as `conversa token` printed it.",
      });
      return;
    }
    if (!UUID_RE.test(tenant)) {
      showError({ code: "bad_tenant", message: "The tenant id must be a UUID." });
      return;
    }
    session.token = token;
    session.tenant = tenant;
    session.claims = claims;
    try {
      renderQueue(await api("GET", "/queue"));
    } catch (error) {
      session.token = null;
      $("token-input").value = token;
      sessionStorage.removeItem(TOKEN_KEY);
      showError(error);
      show("signin");
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, token);
    sessionStorage.setItem(TENANT_KEY, tenant);
    $("token-input").value = "";
    const who = claims.sub ? `${claims.sub} · ${claims.role || "?"}` : "signed in";
    $("whoami-text").textContent = `${who} · tenant ${tenant}`;
    show("queue");
  }

  function signOut(clearMessages = true) {
    session.token = null;
    session.conversationId = null;
    session.view = null;
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(TENANT_KEY);
    if (clearMessages) {
      clearError();
      say("");
    }
    show("signin");
  }

  // --- The queue ---------------------------------------------------------------------------------

  function renderQueue(data) {
    const items = (data && data.items) || [];
    const body = $("queue-body");
    body.replaceChildren();
    for (const item of items) {
      const row = el("tr", null, { "data-testid": "queue-row", "data-id": item.id });
      row.append(
        el("td", duration(item.waiting_seconds), { "data-testid": "queue-waiting" }),
        el("td", userLabel(item)),
        el("td", item.handoff_reason || "—", { "data-testid": "queue-reason" }),
        el("td", item.state),
        el("td", item.claimed_by || "—", { "data-testid": "queue-claimed" }),
        el("td", item.last_message || "—", { "data-testid": "queue-last-message", class: "text" }),
      );
      const open = el("button", "Open", {
        type: "button",
        "data-testid": "open-conversation",
        "aria-label": `Open the conversation with ${userLabel(item)}`,
      });
      open.addEventListener("click", () => openConversation(item.id));
      const cell = el("td");
      cell.append(open);
      row.append(cell);
      body.append(row);
    }
    $("queue-empty").hidden = items.length > 0;
    $("queue-table").hidden = items.length === 0;
    $("queue-updated").textContent = `Updated ${new Date().toLocaleTimeString()}.`;
  }

  async function loadQueue() {
    renderQueue(await api("GET", "/queue"));
  }

  // --- One conversation --------------------------------------------------------------------------

  async function openConversation(id) {
    clearError();
    say("");
    session.conversationId = id;
    session.replyKey = null;
    $("reply-text").value = "";
    $("handback-note").value = "";
    $("template-button").hidden = true;
    hideCloseConfirm();
    try {
      await loadConversation();
      show("conversation");
      $("conv-title").focus();
    } catch (error) {
      session.conversationId = null;
      failed(error);
    }
  }

  async function loadConversation() {
    const view = await api("GET", `/conversations/${encodeURIComponent(session.conversationId)}`);
    session.view = view;
    renderConversation(view);
  }

  function renderConversation(view) {
    $("conv-title").textContent = userLabel(view);
    $("conv-title").setAttribute("tabindex", "-1");
    $("conv-state").textContent = view.state;
    $("conv-state").dataset.state = view.state;
    const me = session.claims.sub;
    $("conv-claimed").textContent = view.claimed_by
      ? `${view.claimed_by}${view.claimed_by === me ? " (you)" : ""}`
      : WITH_STAFF.includes(view.state) ? "nobody yet" : "—";
    $("conv-reason").textContent = view.handoff_reason || "—";
    $("conv-route").textContent =
      { router: "the router", specialist: "a specialist (its request-human tool)",
        staff: "staff (taken over)" }[view.handoff_route] || view.handoff_route || "—";
    $("conv-since").textContent = when(view.handoff_at);
    $("conv-window").textContent = view.window_open
      ? "open (the user wrote in the last 24 hours)"
      : view.template_available
        ? "closed: only the tenant's template can be sent"
        : "closed: only the user can reopen it (no template configured)";

    const withStaff = WITH_STAFF.includes(view.state);
    const mine = !view.claimed_by || view.claimed_by === me;
    $("claim-button").disabled = !withStaff || (view.claimed_by && view.claimed_by === me);
    $("claim-button").textContent =
      view.claimed_by && view.claimed_by === me ? "Claimed by you" : "Claim";
    $("handback-button").disabled = !withStaff;
    $("close-button").disabled = view.state === "CLOSED";
    $("reply-text").disabled = !withStaff || !mine;
    $("reply-button").disabled = !withStaff || !mine;

    renderMessages(view);
    renderRun(view);
    renderMemories(view.memories || []);
    renderTransitions(view.transitions || []);
  }

  function renderMessages(view) {
    const list = $("messages");
    list.replaceChildren();
    for (const message of view.messages || []) {
      const item = el("li", null, {
        "data-testid": "message",
        "data-direction": message.direction,
        "data-purpose": message.purpose || "",
        class: `message ${message.direction} ${message.purpose || ""}`.trim(),
      });
      const head = el("div", null, { class: "meta" });
      head.append(
        el("span", author(message, view), { class: "author", "data-testid": "message-author" }),
        el("span", ` · ${when(message.created_at)} · ${message.status}`),
      );
      item.append(head);
      if (message.body) {
        item.append(el("p", message.body, { class: "body text", "data-testid": "message-body" }));
      }
      if (message.transcript) {
        const transcript = el("p", null, { class: "transcript", "data-testid": "transcript" });
        transcript.append(el("span", "Voice note transcript: ", { class: "label" }));
        transcript.append(el("span", message.transcript, { class: "text" }));
        item.append(transcript);
      } else if (message.kind === "audio" || message.transcription_status) {
        item.append(el("p", `Voice note (transcription: ${message.transcription_status || "none"})`,
          { class: "transcript" }));
      }
      const media = Array.isArray(message.media) ? message.media.length : 0;
      if (media && !message.transcript) item.append(el("p", `${media} attachment(s)`, { class: "meta" }));
      if (message.error) {
        const failed = ["failed", "undelivered"].includes(message.status);
        item.append(el("p", `${failed ? "Error" : "Note"}: ${message.error}`,
          { class: failed ? "meta error-text" : "meta" }));
      }
      list.append(item);
    }
  }

  function renderRun(view) {
    const list = $("conv-run");
    list.replaceChildren();
    const run = view.handoff_run;
    const rows = [["Reason", view.handoff_reason || "—"]];
    if (run) {
      rows.push(["Route", run.route || "—"], ["Router said", run.route_reason || "—"]);
      const tools = (run.tool_calls || []).map((call) => call.name).filter(Boolean);
      rows.push(["Tools called", tools.length ? tools.join(", ") : "none"]);
      rows.push(["At", when(run.created_at)]);
    }
    for (const [term, value] of rows) list.append(el("dt", term), el("dd", value));
  }

  function renderMemories(memories) {
    const list = $("memories");
    list.replaceChildren();
    if (!memories.length) list.append(el("li", "No memories of this user.", { class: "hint" }));
    for (const memory of memories) list.append(el("li", memory.text || memory.key, { class: "text" }));
  }

  function renderTransitions(transitions) {
    const list = $("transitions");
    list.replaceChildren();
    for (const t of transitions) {
      const item = el("li", null, { "data-testid": "transition" });
      item.append(
        el("strong", `${t.from_state} → ${t.to_state}`),
        el("span", ` by ${t.actor_kind} (${t.actor}), ${when(t.created_at)}`),
      );
      if (t.reason) item.append(el("div", t.reason, { class: "hint text" }));
      list.append(item);
    }
  }

  // --- Actions -----------------------------------------------------------------------------------

  async function act(label, action) {
    clearError();
    say(`${label}…`);
    try {
      const message = await action();
      say(message);
      await loadConversation();
    } catch (error) {
      say("");
      failed(error);
      return error;
    }
    return null;
  }

  const conversationPath = (action) =>
    `/conversations/${encodeURIComponent(session.conversationId)}/${action}`;

  function claim() {
    return act("Claiming", async () => {
      await api("POST", conversationPath("claim"));
      return "Claimed: the conversation is yours.";
    });
  }

  async function reply(useTemplate) {
    const text = $("reply-text").value.trim();
    if (!text) {
      showError({ code: "empty_reply", message: "Type a reply first." });
      return;
    }
    session.replyKey = session.replyKey || newKey();
    const error = await act("Sending", async () => {
      const sent = await api("POST", conversationPath("reply"), { text, use_template: useTemplate },
        { "Idempotency-Key": session.replyKey });
      $("reply-text").value = "";
      session.replyKey = null;
      $("template-button").hidden = true;
      return useTemplate
        ? `Template queued for WhatsApp (message ${sent.message_id}).`
        : `Reply queued for WhatsApp (message ${sent.message_id}).`;
    });
    if (error && error.code === "window_closed" && session.view && session.view.template_available) {
      $("template-button").hidden = false;
      $("template-button").focus();
    }
  }

  function handBack() {
    return act("Handing back", async () => {
      await api("POST", conversationPath("hand-back"), { note: $("handback-note").value.trim() });
      $("handback-note").value = "";
      return "Handed back: the assistant resumes the conversation and answers the next message.";
    });
  }

  function closeConversation() {
    hideCloseConfirm();
    return act("Closing", async () => {
      await api("POST", conversationPath("close"), { note: $("handback-note").value.trim() });
      $("handback-note").value = "";
      return "Closed: the user's next message starts a new conversation.";
    });
  }

  function hideCloseConfirm() {
    $("close-confirm").hidden = true;
    $("close-button").hidden = false;
  }

  // --- Refresh -----------------------------------------------------------------------------------

  async function refresh() {
    if (session.busy || !session.token || document.hidden) return;
    session.busy = true;
    try {
      if (session.screen === "queue") await loadQueue();
      else if (session.screen === "conversation") await loadConversation();
    } catch (error) {
      failed(error);
    } finally {
      session.busy = false;
    }
  }

  // --- Wiring ------------------------------------------------------------------------------------

  function start() {
    $("signin-form").addEventListener("submit", (event) => {
      event.preventDefault();
      signIn($("token-input").value, $("tenant-input").value);
    });
    $("signout-button").addEventListener("click", () => signOut());
    $("back-button").addEventListener("click", async () => {
      clearError();
      say("");
      session.conversationId = null;
      session.view = null;
      show("queue");
      await refresh();
    });
    $("claim-button").addEventListener("click", claim);
    $("handback-button").addEventListener("click", handBack);
    $("close-button").addEventListener("click", () => {
      $("close-button").hidden = true;
      $("close-confirm").hidden = false;
      $("close-confirm-button").focus();
    });
    $("close-confirm-button").addEventListener("click", closeConversation);
    $("close-cancel-button").addEventListener("click", hideCloseConfirm);
    $("reply-form").addEventListener("submit", (event) => {
      event.preventDefault();
      reply(false);
    });
    $("template-button").addEventListener("click", () => reply(true));
    $("reply-text").addEventListener("input", () => {
      session.replyKey = null;
      $("template-button").hidden = true;
    });
    setInterval(refresh, REFRESH_MS);

    // A link may carry the token (and a tenant) in its fragment, which never reaches a server.
    const fragment = new URLSearchParams(window.location.hash.slice(1));
    const linked = fragment.get("token");
    if (linked) {
      history.replaceState(null, "", window.location.pathname + window.location.search);
      signIn(linked, fragment.get("tenant") || "");
      return;
    }
    const stored = sessionStorage.getItem(TOKEN_KEY);
    if (stored) signIn(stored, sessionStorage.getItem(TENANT_KEY) || "");
    else show("signin");
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
