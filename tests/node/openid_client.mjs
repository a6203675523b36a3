// openid-client 6 against a running keymint, as an application and a resource server use it: discovery, the
// client_credentials grant with private_key_jwt for each key file given (RSA, EC P-256, Ed25519: oauth4webapi 3
// signs Ed25519 keys with RFC 9864's alg "Ed25519"), the access token validated as RFC 9068 says through the
// jwks_uri (oauth4webapi's validateJwtAccessToken), introspection, bearer-authorized introspection of a token and
// of an API key (fetchProtectedResource with the resource server's own token, scope tokens:introspect), and
// revocation.
//
// Usage: node openid_client.mjs ISSUER API_KEY_SECRET KEY_FILE...
// Exits non-zero with the failing step; prints one line per key file and a final JSON summary.

import { createPrivateKey } from "node:crypto";
import { readFileSync } from "node:fs";
import { importPKCS8 } from "jose";
import * as oauth from "oauth4webapi";
import * as client from "openid-client";

const [issuer, apiKeySecret, ...keyFiles] = process.argv.slice(2);
if (!issuer || !apiKeySecret || keyFiles.length === 0) {
  console.error("usage: node openid_client.mjs ISSUER API_KEY_SECRET KEY_FILE...");
  process.exit(2);
}

function check(condition, what, detail) {
  if (!condition) {
    throw new Error(`${what}: ${JSON.stringify(detail)}`);
  }
}

// The key file's PEM as a WebCrypto key: RSA key files hold PKCS#1, which WebCrypto does not read, so every key goes
// through Node's parser to PKCS#8 first.
async function signingKey(file) {
  const parsed = createPrivateKey(file.key);
  const alg = { rsa: "RS256", ec: "ES256", ed25519: "Ed25519" }[parsed.asymmetricKeyType];
  check(alg !== undefined, "a key type keymint issues", parsed.asymmetricKeyType);
  const pkcs8 = parsed.export({ type: "pkcs8", format: "pem" });
  return { key: await importPKCS8(pkcs8, alg), alg };
}

const summary = [];
for (const path of keyFiles) {
  const file = JSON.parse(readFileSync(path, "utf8"));
  const { key, alg } = await signingKey(file);
  // keymint runs on plain HTTP in the tests; a deployment's issuer is https.
  // The kid names the application key (keymint refuses an assertion without one); oauth4webapi sends it as given.
  const auth = client.PrivateKeyJwt({ key, kid: file.keyId });
  const config = await client.discovery(new URL(issuer), file.clientId, undefined, auth, {
    execute: [client.allowInsecureRequests],
  });
  // What the library puts in its assertions' header, read off the requests it sends.
  const sentAlgs = new Set();
  config[client.customFetch] = (url, options) => {
    const assertion = new URLSearchParams(String(options.body ?? "")).get("client_assertion");
    if (assertion) sentAlgs.add(JSON.parse(Buffer.from(assertion.split(".")[0], "base64url").toString()).alg);
    return fetch(url, options);
  };
  const metadata = config.serverMetadata();
  check(metadata.issuer === issuer, "discovery names the issuer", metadata.issuer);

  // The application gets a token for the API, and the resource server a token to introspect with.
  const granted = await client.clientCredentialsGrant(config, { scope: "invoices:read" });
  check(granted.token_type.toLowerCase() === "bearer", "a bearer token", granted);
  const access = granted.access_token;
  const introspector = (await client.clientCredentialsGrant(config, { scope: "tokens:introspect" })).access_token;

  // RFC 9068, as a resource server validates it: signature through jwks_uri, typ at+jwt, iss, aud, exp.
  const audience = JSON.parse(Buffer.from(access.split(".")[1], "base64url").toString()).aud;
  const request = new Request("https://api.example/invoices", { headers: { authorization: `Bearer ${access}` } });
  const claims = await oauth.validateJwtAccessToken(metadata, request, audience, {
    [oauth.allowInsecureRequests]: true,
  });
  check(claims.client_id === file.clientId && claims.scope === "invoices:read", "validated claims", claims);

  // Introspection with the client's assertion, then with the resource server's bearer token.
  const introspected = await client.tokenIntrospection(config, access);
  check(introspected.active === true && introspected.client_id === file.clientId, "introspection", introspected);
  const byBearer = async (token) => {
    const response = await client.fetchProtectedResource(
      config,
      introspector,
      new URL(metadata.introspection_endpoint),
      "POST",
      new URLSearchParams({ token }),
      new Headers({ "content-type": "application/x-www-form-urlencoded" }),
    );
    check(response.status === 200, "bearer-authorized introspection answers 200", response.status);
    return response.json();
  };
  const token = await byBearer(access);
  check(token.active === true && token.scope === "invoices:read", "a token by bearer", token);
  const apiKey = await byBearer(apiKeySecret);
  check(apiKey.active === true && apiKey.token_type === "api_key", "an API key by bearer", apiKey);

  // Revocation, then the token is inactive to both ways of asking.
  await client.tokenRevocation(config, access);
  const revoked = await client.tokenIntrospection(config, access);
  check(revoked.active === false && Object.keys(revoked).length === 1, "revoked, by assertion", revoked);
  const revokedByBearer = await byBearer(access);
  check(revokedByBearer.active === false && Object.keys(revokedByBearer).length === 1, "revoked, by bearer", revokedByBearer);

  check(sentAlgs.size === 1 && sentAlgs.has(alg), `assertions signed as ${alg}`, [...sentAlgs]);
  console.log(`${alg}: token, RFC 9068 validation, introspection (assertion and bearer), revocation: ok`);
  summary.push({ alg, client_id: file.clientId, revoked_token: access });
}
console.log(JSON.stringify(summary));
