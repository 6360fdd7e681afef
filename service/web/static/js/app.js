// The console's shell: sign-in gate, navigation, and a hash router (#/jobs, #/new, #/datasets/<id>,
// #/labeling-jobs/<id>, #/predict, #/explore). Each view's mount() returns a cleanup function that
// stops its polling when the user navigates away.

import { session } from "./api.js";
import { clear } from "./ui.js";
import * as signin from "./views/signin.js";
import * as jobs from "./views/jobs.js";
import * as create from "./views/create.js";
import * as job from "./views/job.js";
import * as predict from "./views/predict.js";
import * as explore from "./views/explore.js";

const ROUTES = [
  [/^#\/jobs$/, () => jobs.mount, "jobs"],
  [/^#\/new$/, () => create.mount, "new"],
  [/^#\/(datasets|labeling-jobs)\/([0-9a-f]{32})$/, (m) => (el) => job.mount(el, m[1], m[2]), "jobs"],
  [/^#\/predict$/, () => predict.mount, "predict"],
  [/^#\/explore$/, () => explore.mount, "explore"],
];

const view = document.getElementById("view");
const nav = document.getElementById("nav");
const signoutButton = document.getElementById("signout");
let cleanup = () => {};

function route() {
  cleanup();
  cleanup = () => {};
  const signedIn = Boolean(session.key);
  nav.hidden = !signedIn;
  signoutButton.hidden = !signedIn;
  if (!signedIn) {
    document.body.dataset.view = "signin";
    cleanup = signin.mount(clear(view), () => { location.hash = "#/jobs"; route(); }) || (() => {});
    return;
  }
  const hash = location.hash || "#/jobs";
  for (const [re, make, tab] of ROUTES) {
    const m = hash.match(re);
    if (!m) continue;
    document.body.dataset.view = tab;
    for (const a of nav.querySelectorAll("a")) a.classList.toggle("active", a.dataset.route === tab);
    cleanup = make(m)(clear(view)) || (() => {});
    return;
  }
  location.hash = "#/jobs";
}

signoutButton.addEventListener("click", () => { session.signOut(); route(); });
window.addEventListener("labelforge:unauthorized", () => { session.signOut(); route(); });
window.addEventListener("hashchange", route);
route();
