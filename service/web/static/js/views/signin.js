// Sign in with an API key: checked against the API (GET /models) before it is kept, in sessionStorage
// only, so closing the tab forgets it.

import { api, session } from "../api.js";
import { h } from "../ui.js";

export function mount(el, done) {
  const input = h("input#api-key", { type: "password", name: "api-key", autocomplete: "off", placeholder: "lf_…", required: true, spellcheck: "false" });
  const message = h("div.field-error#signin-error", { role: "alert" });
  const button = h("button.primary", { type: "submit" }, "Sign in");
  const form = h("form.card.signin", {
    onsubmit: async (event) => {
      event.preventDefault();
      message.textContent = "";
      button.disabled = true;
      session.signIn(input.value.trim());
      try {
        await api("models", { signOutOn401: false });
        done();
      } catch (error) {
        session.signOut();
        message.textContent = error.status === 401 ? `Not signed in: ${error.message}.` : error.message;
        input.select();
      } finally {
        button.disabled = false;
      }
    },
  },
  h("h1", "Sign in"),
  h("p.muted", "Paste the API key for your tenant. ", h("code", "labelforge serve"), " prints it and keeps it in ", h("code", "data/api_key"), "."),
  h("label", { for: "api-key" }, "API key"), input, message, button);
  el.append(h("div.center", form));
  input.focus();
}
