// The console page: the connection form, then projects → API apps → application keys, and API keys, each a table
// filled from keymint and a form that creates one more.

import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { byId, element, fillRows, row, words } from "./dom";
import { describeFailure } from "./errors";
import * as format from "./format";
import { Environment } from "./gen/keymint/apikeys/v1/apikeys_pb";
import { KeyAlgorithm, KeyType, KeyView } from "./gen/keymint/management/v1/management_pb";
import { KeyFileOffer, SecretReveal } from "./once";
import { type Session, defaultServer, openSession } from "./session";

/** One page of each list: keymint's default page size. */
const PAGE = 100;

interface Chosen {
  id: string;
  name: string;
}

let session: Session | null = null;
let project: Chosen | null = null;
let app: Chosen | null = null;
const keyFile = new KeyFileOffer();
const secret = new SecretReveal();

const sections = {
  projects: byId<HTMLElement>("projects"),
  apps: byId<HTMLElement>("apps"),
  appKeys: byId<HTMLElement>("app-keys"),
  apiKeys: byId<HTMLElement>("api-keys"),
};

function connected(): Session {
  if (!session) throw new Error("not connected: paste a token and connect first");
  return session;
}

/** Runs one user action: its submit button is disabled meanwhile, and a failure is shown with its reason. */
async function act(what: string, work: () => Promise<void>, trigger?: HTMLButtonElement | null): Promise<void> {
  const error = byId<HTMLDivElement>("error");
  error.hidden = true;
  error.replaceChildren();
  if (trigger) trigger.disabled = true;
  try {
    await work();
  } catch (failure) {
    showFailure(what, failure);
  } finally {
    if (trigger) trigger.disabled = false;
  }
}

function showFailure(what: string, failure: unknown): void {
  const { code, reason, message, fields } = describeFailure(failure);
  const error = byId<HTMLDivElement>("error");
  const heading = element("p", { class: "error-title" }, `${what} failed: `, element("strong", {}, code));
  if (reason !== "") heading.append(" ", element("code", { class: "reason" }, reason));
  error.replaceChildren(heading, element("p", {}, message));
  if (fields.length > 0) {
    error.append(
      element(
        "ul",
        { "aria-label": "Invalid fields" },
        ...fields.map((f) => element("li", {}, element("code", {}, f.field), `: ${f.description}`)),
      ),
    );
  }
  error.hidden = false;
  // The alert sits above the forms; bring it into view for a person who clicked far below it.
  error.scrollIntoView({ block: "nearest" });
}

function submitter(event: SubmitEvent): HTMLButtonElement | null {
  return event.submitter instanceof HTMLButtonElement ? event.submitter : null;
}

/** Binds a form's submit to an action; the form's reset is left to the action (a failure keeps what was typed). */
function onSubmit(formId: string, what: string, work: (form: HTMLFormElement) => Promise<void>): void {
  const form = byId<HTMLFormElement>(formId);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    void act(what, () => work(form), submitter(event));
  });
}

function field(form: HTMLFormElement, name: string): string {
  const value = new FormData(form).get(name);
  return typeof value === "string" ? value.trim() : "";
}

function openButton(label: string, open: () => Promise<void>, what: string): HTMLButtonElement {
  const button = element("button", { type: "button", "aria-label": label }, "Open");
  button.addEventListener("click", () => void act(what, open, button));
  return button;
}

function truncatedNote(id: string, shown: number, total: bigint | number | undefined): void {
  const note = byId<HTMLElement>(id);
  const all = total === undefined ? shown : Number(total);
  note.textContent = all > shown ? `Showing the first ${shown} of ${all}.` : "";
}

// --- connection ---------------------------------------------------------------------------------------------

async function connect(server: string, token: string): Promise<void> {
  const candidate = openSession(server, token);
  // A first call proves the URL and the token before the page shows anything as connected.
  await candidate.management.listProjects({ query: { limit: 1 } });
  session = candidate;
  byId<HTMLInputElement>("token").value = "";
  byId("connection-status").textContent = `Connected to ${server}.`;
  byId("disconnect").hidden = false;
  sections.projects.hidden = false;
  sections.apiKeys.hidden = false;
  closeProject();
  await Promise.all([loadProjects(), loadApiKeys()]);
}

/** Back to a page that knows no server: no session, no lists, no secret left on screen. */
function reset(): void {
  session = null;
  closeProject();
  keyFile.forget();
  secret.dismiss();
  for (const body of ["project-rows", "api-key-rows"]) byId(body).replaceChildren();
  sections.projects.hidden = true;
  sections.apiKeys.hidden = true;
  byId("disconnect").hidden = true;
  byId("connection-status").textContent = "";
}

function disconnect(): void {
  reset();
  byId("connection-status").textContent = "Token forgotten.";
}

// --- projects -----------------------------------------------------------------------------------------------

async function loadProjects(): Promise<void> {
  const listed = await connected().management.listProjects({ query: { limit: PAGE, asc: true } });
  const rows = listed.result.map((p) =>
    row(
      p.name,
      element("code", {}, p.id),
      format.date(p.details?.creationDate),
      openButton(`Open project ${p.name}`, () => openProject({ id: p.id, name: p.name }), "Opening the project"),
    ),
  );
  fillRows(byId("project-rows"), rows, "No projects yet.");
  truncatedNote("projects-more", rows.length, listed.details?.totalResult);
}

function closeProject(): void {
  project = null;
  closeApp();
  sections.apps.hidden = true;
  byId("app-rows").replaceChildren();
}

async function openProject(chosen: Chosen): Promise<void> {
  closeProject();
  project = chosen;
  byId("apps-title").textContent = `API apps in ${chosen.name}`;
  sections.apps.hidden = false;
  await loadApps();
}

onSubmit("project-form", "Creating the project", async (form) => {
  const name = field(form, "name");
  const created = await connected().management.addProject({ name });
  form.reset();
  await loadProjects();
  await openProject({ id: created.id, name });
});

// --- API apps -----------------------------------------------------------------------------------------------

async function loadApps(): Promise<void> {
  if (!project) return;
  const current = project;
  const listed = await connected().management.listApps({ projectId: current.id, query: { limit: PAGE, asc: true } });
  const rows = listed.result.map((a) =>
    row(
      a.name,
      element("code", {}, a.clientId),
      a.allowedScopes.join(" ") || "—",
      openButton(`Open app ${a.name}`, () => openApp({ id: a.id, name: a.name }), "Opening the app"),
    ),
  );
  fillRows(byId("app-rows"), rows, "No API apps in this project yet.");
  truncatedNote("apps-more", rows.length, listed.details?.totalResult);
}

function closeApp(): void {
  app = null;
  keyFile.forget();
  sections.appKeys.hidden = true;
  byId("app-key-rows").replaceChildren();
}

async function openApp(chosen: Chosen): Promise<void> {
  closeApp();
  app = chosen;
  byId("app-keys-title").textContent = `Application keys of ${chosen.name}`;
  sections.appKeys.hidden = false;
  await loadAppKeys();
}

onSubmit("app-form", "Creating the app", async (form) => {
  if (!project) throw new Error("open a project first");
  const name = field(form, "name");
  const created = await connected().management.addAPIApp({
    projectId: project.id,
    name,
    allowedScopes: words(field(form, "scopes")),
  });
  form.reset();
  await loadApps();
  await openApp({ id: created.appId, name });
});

// --- application keys ---------------------------------------------------------------------------------------

async function loadAppKeys(): Promise<void> {
  if (!project || !app) return;
  const listed = await connected().management.listAppKeys({
    projectId: project.id,
    appId: app.id,
    query: { limit: PAGE, asc: true },
    // The table shows no key material, so none is asked for.
    view: KeyView.BASIC,
  });
  const rows = listed.result.map((k) =>
    row(
      element("code", {}, k.id),
      format.algorithm(k.algorithm) + (k.supplied ? " (supplied)" : ""),
      format.expiry(k.expirationDate),
      format.date(k.details?.creationDate),
    ),
  );
  fillRows(byId("app-key-rows"), rows, "No keys for this app yet.");
  truncatedNote("app-keys-more", rows.length, listed.details?.totalResult);
}

const ALGORITHMS: Record<string, KeyAlgorithm> = {
  RSA: KeyAlgorithm.RSA,
  EC_P256: KeyAlgorithm.EC_P256,
  ED25519: KeyAlgorithm.ED25519,
};

onSubmit("app-key-form", "Creating the key", async (form) => {
  if (!project || !app) throw new Error("open an app first");
  const expires = field(form, "expires");
  const created = await connected().management.addAppKey({
    projectId: project.id,
    appId: app.id,
    type: KeyType.JSON,
    algorithm: ALGORITHMS[field(form, "algorithm")] ?? KeyAlgorithm.RSA,
    expirationDate: expires === "" ? undefined : timestampFromDate(new Date(`${expires}T00:00:00Z`)),
  });
  form.reset();
  keyFile.offer(created.id, created.keyDetails);
  await loadAppKeys();
});

// --- API keys -----------------------------------------------------------------------------------------------

async function loadApiKeys(): Promise<void> {
  const listed = await connected().apiKeys.listApiKeys({ limit: PAGE });
  const rows = listed.result.map((k) =>
    row(
      k.title,
      // The display prefix and last four characters: enough to recognise a key, never enough to use it.
      element("code", {}, `${k.prefix}…${k.lastFour}`),
      format.environment(k.environment),
      format.status(k.status),
      k.scopes.join(" ") || "—",
      format.date(k.details?.creationDate),
    ),
  );
  fillRows(byId("api-key-rows"), rows, "No API keys yet.");
  byId("api-keys-more").textContent = listed.hasMore ? `Showing the first ${rows.length}.` : "";
}

onSubmit("api-key-form", "Creating the API key", async (form) => {
  const created = await connected().apiKeys.createApiKey({
    title: field(form, "title"),
    scopes: words(field(form, "scopes")),
    environment: field(form, "environment") === "TEST" ? Environment.TEST : Environment.LIVE,
  });
  form.reset();
  secret.show(created.secret);
  await loadApiKeys();
});

// --- start --------------------------------------------------------------------------------------------------

byId<HTMLInputElement>("server").value = defaultServer(window.location);
onSubmit("connect-form", "Connecting", async (form) => {
  reset();
  await connect(field(form, "server"), field(form, "token"));
});
byId("disconnect").addEventListener("click", disconnect);
