// Turning a failed call into what a person needs: the gRPC code, keymint's ErrorInfo reason and the invalid fields.
//
// keymint sends `google.rpc.ErrorInfo` and `google.rpc.BadRequest` in `grpc-status-details-bin`; connect-web hands
// them over undecoded (type name + bytes) when the page has no schema for them. The contracts do not carry those
// google.rpc messages yet, so the two are read here straight from the protobuf wire format with protobuf-es's
// reader: a handful of string fields, stable since Google published them.

import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import { Code, ConnectError } from "@connectrpc/connect";

export interface FieldViolation {
  field: string;
  description: string;
}

export interface CallFailure {
  /** The gRPC code's name as the protocol spells it, e.g. `ALREADY_EXISTS`. */
  code: string;
  /** ErrorInfo's machine-readable reason, e.g. `PROJECT_NAME_TAKEN`; empty when the server sent none. */
  reason: string;
  message: string;
  fields: FieldViolation[];
}

export function describeFailure(error: unknown): CallFailure {
  const failure = ConnectError.from(error);
  let reason = "";
  const fields: FieldViolation[] = [];
  for (const detail of failure.details) {
    if (!("type" in detail)) continue;
    // Type names arrive with or without the `type.googleapis.com/` prefix depending on the transport.
    const type = detail.type.slice(detail.type.lastIndexOf("/") + 1);
    try {
      if (type === "google.rpc.ErrorInfo") reason ||= errorInfoReason(detail.value);
      if (type === "google.rpc.BadRequest") fields.push(...badRequestViolations(detail.value));
    } catch {
      // A detail that does not decode is left out; the code and message still tell what happened.
    }
  }
  return { code: codeName(failure.code), reason, message: failure.rawMessage, fields };
}

/** `Code.AlreadyExists` → `ALREADY_EXISTS`, the name gRPC clients and keymint's docs use. */
function codeName(code: Code): string {
  return (Code[code] ?? "UNKNOWN").replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}

/** google.rpc.ErrorInfo: `string reason = 1; string domain = 2; map<string, string> metadata = 3;` */
function errorInfoReason(bytes: Uint8Array): string {
  let reason = "";
  forEachField(bytes, (field, wireType, reader) => {
    if (field === 1 && wireType === WireType.LengthDelimited) reason = reader.string();
    else reader.skip(wireType);
  });
  return reason;
}

/** google.rpc.BadRequest: `repeated FieldViolation field_violations = 1;` with `field = 1`, `description = 2`. */
function badRequestViolations(bytes: Uint8Array): FieldViolation[] {
  const violations: FieldViolation[] = [];
  forEachField(bytes, (field, wireType, reader) => {
    if (field !== 1 || wireType !== WireType.LengthDelimited) return void reader.skip(wireType);
    const violation: FieldViolation = { field: "", description: "" };
    forEachField(reader.bytes(), (inner, innerType, innerReader) => {
      if (inner === 1 && innerType === WireType.LengthDelimited) violation.field = innerReader.string();
      else if (inner === 2 && innerType === WireType.LengthDelimited) violation.description = innerReader.string();
      else innerReader.skip(innerType);
    });
    violations.push(violation);
  });
  return violations;
}

function forEachField(
  bytes: Uint8Array,
  visit: (field: number, wireType: WireType, reader: BinaryReader) => void,
): void {
  const reader = new BinaryReader(bytes);
  while (reader.pos < reader.len) {
    const [field, wireType] = reader.tag();
    visit(field, wireType, reader);
  }
}
