// Secrets the server hands out once (an application key file, an API key secret): shown or offered until the
// person takes them, then dropped from the page.

import { byId } from "./dom";

const REVOKE_AFTER_CLICK_MS = 1_000;

/**
 * Offers a key file as one download. The bytes live only in a Blob behind an object URL; the click (or
 * "Discard") revokes the URL and hides the link, so nothing is left to download a second time.
 */
export class KeyFileOffer {
  private url: string | null = null;
  private readonly panel = byId<HTMLDivElement>("key-file");
  private readonly link = byId<HTMLAnchorElement>("key-file-link");

  constructor() {
    // The click's default action starts the download with the URL as it is; the link goes on the next task, and
    // the URL a moment later: a browser that reads the Blob asynchronously has it until then, nobody after.
    this.link.addEventListener("click", () => setTimeout(() => this.forget(REVOKE_AFTER_CLICK_MS), 0));
    byId<HTMLButtonElement>("key-file-discard").addEventListener("click", () => this.forget());
  }

  offer(keyId: string, keyFile: Uint8Array): void {
    this.forget();
    this.url = URL.createObjectURL(new Blob([keyFile as Uint8Array<ArrayBuffer>], { type: "application/json" }));
    // The Blob holds its own copy: wipe the response's bytes so the private key is in one place only.
    keyFile.fill(0);
    this.link.href = this.url;
    this.link.download = `keymint-key-${keyId}.json`;
    this.link.textContent = `Download key file ${keyId}.json`;
    this.panel.hidden = false;
  }

  forget(revokeAfterMs = 0): void {
    const url = this.url;
    if (url !== null) {
      if (revokeAfterMs > 0) setTimeout(() => URL.revokeObjectURL(url), revokeAfterMs);
      else URL.revokeObjectURL(url);
    }
    this.url = null;
    this.link.removeAttribute("href");
    this.link.removeAttribute("download");
    this.link.textContent = "";
    this.panel.hidden = true;
  }
}

/** Shows an API key secret until it is dismissed; dismissing clears the text, not just hides it. */
export class SecretReveal {
  private readonly panel = byId<HTMLDivElement>("api-key-secret");
  private readonly value = byId<HTMLOutputElement>("api-key-secret-value");
  private readonly copy = byId<HTMLButtonElement>("api-key-secret-copy");

  constructor() {
    byId<HTMLButtonElement>("api-key-secret-dismiss").addEventListener("click", () => this.dismiss());
    this.copy.addEventListener("click", () => {
      // The Clipboard API needs a secure context (https or localhost); elsewhere the person selects and copies.
      navigator.clipboard?.writeText(this.value.value).then(
        () => (this.copy.textContent = "Copied"),
        () => (this.copy.textContent = "Copy failed: select the secret and copy it"),
      );
    });
  }

  show(secret: string): void {
    this.value.value = secret;
    this.copy.textContent = "Copy secret";
    this.panel.hidden = false;
  }

  dismiss(): void {
    this.value.value = "";
    this.panel.hidden = true;
  }
}
