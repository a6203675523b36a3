// How the console shows keymint's values: dates, enums and key labels, in one place so every table agrees.

import { type Timestamp, timestampDate } from "@bufbuild/protobuf/wkt";
import { KeyAlgorithm } from "./gen/keymint/management/v1/management_pb";
import { Environment, Status } from "./gen/keymint/apikeys/v1/apikeys_pb";

export function date(timestamp: Timestamp | undefined, absent = "—"): string {
  if (!timestamp) return absent;
  // ISO 8601 in UTC, to the minute: the same on every machine, so two admins comparing screens agree.
  return timestampDate(timestamp).toISOString().slice(0, 16).replace("T", " ") + " UTC";
}

/** An expiry: keymint reports "never" as the last second of year 9999, the Timestamp range's end. */
export function expiry(timestamp: Timestamp | undefined): string {
  if (!timestamp || timestampDate(timestamp).getUTCFullYear() >= 9999) return "never";
  return date(timestamp);
}

export function algorithm(value: KeyAlgorithm): string {
  switch (value) {
    case KeyAlgorithm.EC_P256:
      return "EC P-256";
    case KeyAlgorithm.ED25519:
      return "Ed25519";
    default:
      // Unset means RSA: keymint's default algorithm, and what keys made before the choice existed are.
      return "RSA";
  }
}

export function environment(value: Environment): string {
  return value === Environment.TEST ? "test" : value === Environment.LIVE ? "live" : "—";
}

export function status(value: Status): string {
  switch (value) {
    case Status.ACTIVE:
      return "active";
    case Status.INACTIVE:
      return "inactive";
    case Status.REVOKED:
      return "revoked";
    default:
      return "—";
  }
}
