"use strict";
// The rating page: asks the server for this rater's state, shows one image, sends one answer per click or key.
(() => {
  const base = location.pathname.replace(/\/+$/, "");          // /s/<study token>
  const api = base + "/api";
  const storeKey = "masquerade-rater:" + base;
  const UNREC = "unrecognisable";
  // a key for every choice: 1-9, then letters (u is "unrecognisable"), so a ten-class set needs no mouse
  const KEYS = "123456789abcdefghijklmnopqrstvwxyz".split("");
  const APPEAL = {"1": "not at all appealing", "3": "neutral", "5": "very appealing"};
  const $ = (id) => document.getElementById(id);
  let rater = localStorage.getItem(storeKey);
  let state = null;
  let viewing = "current";          // or "previous": going back one to change it
  let busy = false;

  async function call(method, path, body) {
    const init = {method, headers: {}, cache: "no-store"};
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const r = await fetch(api + path, init);
    const data = await r.json().catch(() => ({}));
    if (!r.ok) {
      const e = new Error(data.error || ("HTTP " + r.status));
      e.status = r.status;
      throw e;
    }
    return data;
  }

  async function start() {
    if (!rater) {
      rater = (await call("POST", "/raters")).rater;
      localStorage.setItem(storeKey, rater);
    }
    try {
      state = await call("GET", "/raters/" + rater);
    } catch (e) {
      if (e.status === 404) {      // this browser's rater is not in this study: start as a new one
        localStorage.removeItem(storeKey);
        rater = null;
        return start();
      }
      throw e;
    }
    render();
  }

  function shown() { return viewing === "previous" ? state.previous : state.current; }

  function button(value, label, key, extra) {
    const b = document.createElement("button");
    b.type = "button";
    b.dataset.choice = value;
    if (key) {
      const k = document.createElement("kbd");
      k.textContent = key.toUpperCase();
      b.appendChild(k);
    }
    b.appendChild(document.createTextNode(label));
    if (extra) {
      const s = document.createElement("small");
      s.textContent = extra;
      b.appendChild(s);
    }
    b.addEventListener("click", () => answer(value));
    return b;
  }

  function render() {
    $("progress").textContent = state.position + " / " + state.total;
    $("bar").style.width = (100 * state.position / Math.max(1, state.total)) + "%";
    const it = shown();
    $("done").hidden = it !== null;
    $("rate").hidden = it === null;
    $("back").disabled = !state.previous;
    if (!it) {
      document.title = "Image rating: done";
      $("done").appendChild($("back").parentNode);
      return;
    }
    $("rate").appendChild($("back").parentNode);
    $("changing").hidden = viewing !== "previous";
    $("back").innerHTML = viewing === "previous" ? "Return → <kbd>Esc</kbd>" : "← Back <kbd>⌫</kbd>";
    $("question").textContent = it.question;
    const img = $("image");
    img.classList.remove("tiny");
    img.onload = () => img.classList.toggle("tiny", img.naturalWidth < 128);
    img.src = api + "/raters/" + rater + "/images/" + it.id;
    const box = $("choices");
    box.replaceChildren();
    box.classList.toggle("appeal", it.type === "appeal");
    it.choices.forEach((c, i) => {
      box.appendChild(button(c, c, i < KEYS.length ? KEYS[i] : "",
                             it.type === "appeal" ? (APPEAL[c] || "") : ""));
    });
    $("unrec-help").hidden = !it.unrecognisable;   // appeal questions have no "unrecognisable" answer
    if (it.unrecognisable) {
      const b = button(UNREC, "unrecognisable", "0");
      b.classList.add("unrec");
      box.appendChild(b);
    }
    if (viewing === "previous") {
      for (const b of box.children) b.classList.toggle("chosen", b.dataset.choice === it.answer);
    }
    $("message").textContent = "";
  }

  async function answer(choice) {
    const it = shown();
    if (busy || !it) return;
    busy = true;
    try {
      state = await call("POST", "/raters/" + rater + "/answers",
                         {item: it.id, choice: choice, change: viewing === "previous"});
      viewing = "current";
      render();
    } catch (e) {
      if (e.status === 409) {            // answered already (another tab?): take the server's word for where we are
        state = await call("GET", "/raters/" + rater);
        viewing = "current";
        render();
      }
      $("message").textContent = "Not saved: " + e.message;
    } finally {
      busy = false;
    }
  }

  function back() {
    if (!state) return;
    if (viewing === "previous") viewing = "current";
    else if (state.previous) viewing = "previous";
    render();
  }

  $("back").addEventListener("click", back);
  document.addEventListener("keydown", (ev) => {
    if (ev.ctrlKey || ev.metaKey || ev.altKey || !state) return;
    const it = shown();
    if (ev.key === "Backspace") { ev.preventDefault(); if (viewing === "current") back(); return; }
    if (ev.key === "Escape") { if (viewing === "previous") back(); return; }
    if (!it) return;
    if ((ev.key === "0" || ev.key.toLowerCase() === "u") && it.unrecognisable) { answer(UNREC); return; }
    const i = ev.key.length === 1 ? KEYS.indexOf(ev.key.toLowerCase()) : -1;
    if (i >= 0 && i < it.choices.length) answer(it.choices[i]);
  });
  start().catch((e) => { $("progress").textContent = ""; $("message").textContent = "Cannot load: " + e.message; });
})();
