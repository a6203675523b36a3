// Drives the built console (web/dist) in headless Chromium against a running keymint, as an admin would:
//
//   node web/test/console.mjs <keymint or Envoy URL> <admin token>
//
// The page is served from a port of its own, so every call is cross-origin (CORS included). Chromium is
// KEYMINT_TEST_CHROMIUM, else /usr/bin/chromium. Prints one line per step; exits non-zero on the first failure
// (with a screenshot in KEYMINT_CONSOLE_SCREENSHOT when set). On success the last line is
// `RESULT {...}` with the IDs it created, for a caller that wants to check them on the server.

import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import { randomBytes } from "node:crypto";
import { extname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const [keymint, token] = process.argv.slice(2);
if (!keymint || !token) {
  console.error("usage: node web/test/console.mjs <keymint URL> <admin token>");
  process.exit(2);
}
const dist = fileURLToPath(new URL("../dist/", import.meta.url));
const chromiumPath = process.env.KEYMINT_TEST_CHROMIUM || "/usr/bin/chromium";
const screenshot = process.env.KEYMINT_CONSOLE_SCREENSHOT;
const STEP_TIMEOUT_MS = 30_000;

const TYPES = { ".html": "text/html; charset=utf-8", ".js": "text/javascript", ".css": "text/css", ".map": "application/json" };

/** A static server for web/dist on 127.0.0.1 and a free port: the page's origin, apart from keymint's. */
function serveDist() {
  const server = createServer(async (request, response) => {
    const path = new URL(request.url ?? "/", "http://x").pathname;
    const file = normalize(join(dist, path === "/" ? "index.html" : path));
    if (!file.startsWith(dist)) return void response.writeHead(403).end();
    try {
      const body = await readFile(file);
      response.writeHead(200, { "content-type": TYPES[extname(file)] ?? "application/octet-stream" }).end(body);
    } catch {
      response.writeHead(404).end();
    }
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}

let passed = 0;
function ok(step) {
  passed += 1;
  console.log(`ok ${passed} - ${step}`);
}
function check(condition, what) {
  if (!condition) throw new Error(`check failed: ${what}`);
}

async function expectText(locator, text, what) {
  await locator.filter({ hasText: text }).first().waitFor({ timeout: STEP_TIMEOUT_MS }).catch(async () => {
    throw new Error(`${what}: expected "${text}", saw "${(await locator.allInnerTexts()).join(" | ")}"`);
  });
}

/** Whether a Blob URL no longer opens, tried for a few seconds (the page revokes it a moment after the click). */
async function blobIsRevoked(context, url) {
  for (let attempt = 0; attempt < 20; attempt += 1) {
    const tab = await context.newPage();
    const opened = await tab.goto(url).then(() => true, () => false);
    await tab.close();
    if (!opened) return true;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  return false;
}

const pageServer = await serveDist();
const origin = `http://127.0.0.1:${pageServer.address().port}`;
const browser = await chromium.launch({
  executablePath: chromiumPath,
  headless: true,
  // Root in a container has no user namespaces for Chromium's sandbox.
  args: ["--no-sandbox"],
});
const context = await browser.newContext({ acceptDownloads: true });
const page = await context.newPage();
page.setDefaultTimeout(STEP_TIMEOUT_MS);
const pageErrors = [];
page.on("pageerror", (error) => pageErrors.push(error.message));

const suffix = randomBytes(4).toString("hex");
const names = { project: `console-${suffix}`, app: `web-${suffix}`, apiKey: `ci-${suffix}` };
const alert = page.getByRole("alert");

try {
  await page.goto(`${origin}/?server=${encodeURIComponent(keymint)}`);
  check((await page.getByLabel("Server URL").inputValue()) === keymint, "the server URL comes from ?server=");
  ok("the page loads with the server from ?server=");

  // A wrong token: the call is refused, and the page says why, reason included.
  await page.getByLabel("Token", { exact: true }).fill(`km_admin_wrong${suffix}0123456789abcdef`);
  await page.getByRole("button", { name: "Connect" }).click();
  await expectText(alert, "UNAUTHENTICATED", "a bad token");
  await expectText(alert.locator(".reason"), "UNAUTHENTICATED", "a bad token's ErrorInfo reason");
  check(await page.getByRole("heading", { name: "Projects" }).isHidden(), "nothing is shown without a good token");
  ok("a bad token is refused with UNAUTHENTICATED and its reason");

  await page.getByLabel("Token", { exact: true }).fill(token);
  await page.getByRole("button", { name: "Connect" }).click();
  await expectText(page.getByRole("status"), "Connected", "connecting");
  check(await alert.isHidden(), "the earlier error is cleared");
  check((await page.getByLabel("Token", { exact: true }).inputValue()) === "", "the token field is emptied");
  ok("the admin token connects");

  // Projects: create one, see it listed; the same name again is refused with its reason.
  await page.getByLabel("Project name").fill(names.project);
  await page.getByRole("button", { name: "Create project" }).click();
  const projects = page.getByRole("table", { name: "Projects" });
  await expectText(projects.getByRole("row"), names.project, "the projects table");
  await expectText(page.getByRole("heading", { level: 2 }), `API apps in ${names.project}`, "the opened project");
  ok("a project is created, listed and opened");

  await page.getByLabel("Project name").fill(names.project);
  await page.getByRole("button", { name: "Create project" }).click();
  await expectText(alert, "ALREADY_EXISTS", "a duplicate project");
  await expectText(alert, "PROJECT_NAME_TAKEN", "a duplicate project's reason");
  ok("a duplicate project name shows ALREADY_EXISTS with reason PROJECT_NAME_TAKEN");

  // An invalid request shows the field that was wrong (scopes are lowercase resource:action).
  await page.getByLabel("App name").fill(names.app);
  await page.getByLabel("Allowed scopes").fill("Invoices");
  await page.getByRole("button", { name: "Create app" }).click();
  await expectText(alert, "INVALID_ARGUMENT", "an invalid scope");
  await expectText(alert.getByRole("list", { name: "Invalid fields" }), /allowed_?scopes\[0\]/i, "the invalid field");
  ok("an invalid scope shows INVALID_ARGUMENT and the field");

  // API apps: create one with scopes, see it listed, open it.
  await page.getByLabel("App name").fill(names.app);
  await page.getByLabel("Allowed scopes").fill("invoices:read invoices:write");
  await page.getByRole("button", { name: "Create app" }).click();
  const apps = page.getByRole("table", { name: "API apps" });
  await expectText(apps.getByRole("row"), names.app, "the apps table");
  await expectText(apps.getByRole("row"), "invoices:read invoices:write", "the app's scopes");
  await expectText(page.getByRole("heading", { level: 2 }), `Application keys of ${names.app}`, "the opened app");
  ok("an API app is created, listed and opened");

  // Application keys: the key file is offered once, as a download; it holds the private key; then it is gone.
  await page.getByLabel("Algorithm").selectOption({ label: "EC P-256" });
  await page.getByRole("button", { name: "Create key" }).click();
  const link = page.getByRole("link", { name: /Download key file/ });
  const blobUrl = await link.getAttribute("href");
  check(blobUrl?.startsWith("blob:"), "the key file is offered from a Blob, not from a server");
  const [download] = await Promise.all([page.waitForEvent("download"), link.click()]);
  const keyFile = JSON.parse(await readFile(await download.path(), "utf8"));
  check(typeof keyFile.keyId === "string" && keyFile.keyId !== "", "the key file has keyId");
  check(keyFile.key?.startsWith("-----BEGIN PRIVATE KEY-----"), "the key file has the EC private key");
  check(keyFile.type === "application" && keyFile.clientId?.endsWith(`@${names.project}`), "the key file's type and clientId");
  check(download.suggestedFilename().includes(keyFile.keyId), "the download is named after the key");
  await page.getByRole("region", { name: "New key file" }).waitFor({ state: "hidden" });
  check((await page.getByRole("link", { name: /Download key file/ }).count()) === 0, "the link is gone after the click");
  check(await page.locator("#key-file-link").getAttribute("href") === null, "no URL to the key file is left");
  // The Blob's URL is revoked shortly after the click: the key file cannot be opened again. (Opened in a tab of
  // its own: the page's CSP rightly keeps fetch() away from blob: URLs.)
  check(await blobIsRevoked(context, blobUrl), "the key file's Blob URL is revoked after the download");
  await expectText(page.getByRole("table", { name: "Application keys" }).getByRole("row"), keyFile.keyId, "the keys table");
  const keyRow = page.getByRole("table", { name: "Application keys" }).getByRole("row").filter({ hasText: keyFile.keyId });
  await expectText(keyRow, "EC P-256", "the key's algorithm");
  await expectText(keyRow, "never", "a key without an expiry");
  ok("an application key is created, its key file downloaded once, and the key listed");

  // API keys: the secret is shown once, and dismissing it clears it from the page.
  await page.getByLabel("Title").fill(names.apiKey);
  await page.getByLabel("Scopes", { exact: true }).fill("keys:read");
  await page.getByRole("button", { name: "Create API key" }).click();
  const secretRegion = page.getByRole("region", { name: "New API key secret" });
  await secretRegion.waitFor();
  const apiKeySecret = await secretRegion.getByLabel("Secret").textContent();
  check(/^km_live_\S{20,}$/.test(apiKeySecret ?? ""), `the secret looks like a live key (${apiKeySecret?.length} chars)`);
  const apiKeys = page.getByRole("table", { name: "API keys" });
  await expectText(apiKeys.getByRole("row"), names.apiKey, "the API keys table");
  const listed = await apiKeys.getByRole("row").filter({ hasText: names.apiKey }).innerText();
  check(listed.includes("km_live_") && listed.includes(apiKeySecret.slice(-4)), "the list shows the prefix and last four");
  check(!listed.includes(apiKeySecret), "the list never shows the whole secret");
  await page.getByRole("button", { name: "Dismiss secret" }).click();
  await secretRegion.waitFor({ state: "hidden" });
  check(!(await page.content()).includes(apiKeySecret), "the secret is gone from the page after dismissal");
  ok("an API key is created, its secret shown once and cleared on dismissal, and the key listed");

  // Nothing secret was written to the browser's storage.
  const stored = await page.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }) + document.cookie);
  check(!stored.includes(token) && !stored.includes(apiKeySecret) && !stored.includes("PRIVATE KEY"), "storage holds no secret");
  check(!(await page.content()).includes("PRIVATE KEY"), "no private key in the page");
  ok("no token, secret or private key is left in the page or the browser's storage");

  // Forgetting the token hides everything it showed.
  await page.getByRole("button", { name: "Forget token" }).click();
  check(await projects.isHidden(), "the projects are hidden after forgetting the token");
  ok("forgetting the token hides the data");

  check(pageErrors.length === 0, `no uncaught page errors (${pageErrors.join("; ")})`);
  console.log(
    `RESULT ${JSON.stringify({ project: names.project, app: names.app, keyId: keyFile.keyId, appId: keyFile.appId, apiKeyTitle: names.apiKey, apiKeyLastFour: apiKeySecret.slice(-4) })}`,
  );
  console.log(`${passed} passed, 0 failed`);
} catch (error) {
  console.log(`not ok ${passed + 1} - ${error.message}`);
  if (screenshot) await page.screenshot({ path: screenshot, fullPage: true }).catch(() => {});
  console.log(`${passed} passed, 1 failed`);
  process.exitCode = 1;
} finally {
  await browser.close();
  pageServer.close();
}
