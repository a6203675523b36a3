"""An outside OAuth client against keymint: authlib's OAuth2Session with PrivateKeyJWT gets a token by
client_credentials, introspects and revokes it; PyJWT's PyJWKClient verifies the token through jwks_uri.

Usage: oauth_flow.py <issuer URL> <key file> [<result file>]
The key file is the one AddAppKey returns (keyDetails, decoded). Exits non-zero on any failure; writes
{"revoked_token": ...} to the result file, so that the caller can check keymint agrees.
"""

import json
import sys

import jwt
import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT


def main() -> None:
    issuer, key_path = sys.argv[1].rstrip("/"), sys.argv[2]
    result_path = sys.argv[3] if len(sys.argv) > 3 else None
    with open(key_path, encoding="utf-8") as f:
        key_file = json.load(f)

    meta = requests.get(f"{issuer}/.well-known/oauth-authorization-server", timeout=10).json()
    assert meta["issuer"] == issuer, meta
    assert "private_key_jwt" in meta["token_endpoint_auth_methods_supported"], meta

    # The key file as it is: clientId, the PKCS#1 private key, and keyId as the JWT's kid. No token_endpoint is
    # fixed, so each assertion's audience is the URL of the endpoint it is sent to.
    auth = PrivateKeyJWT(headers={"kid": key_file["keyId"]})
    session = OAuth2Session(
        client_id=key_file["clientId"],
        client_secret=key_file["key"],
        token_endpoint_auth_method=auth,
        # authlib's default for revocation is client_secret_basic, which would send the private key as a
        # password: the application authenticates with its assertion there too.
        revocation_endpoint_auth_method=auth,
        scope="invoices:read",
    )
    token = session.fetch_token(meta["token_endpoint"], grant_type="client_credentials")
    access_token = token["access_token"]
    assert token["token_type"].lower() == "bearer", token
    assert token["scope"] == "invoices:read", token

    # A resource server: verify the token's signature through the JWKS.
    assert jwt.get_unverified_header(access_token)["typ"] == "at+jwt"
    signing_key = jwt.PyJWKClient(meta["jwks_uri"]).get_signing_key_from_jwt(access_token)

    introspected = session.introspect_token(meta["introspection_endpoint"], token=access_token).json()
    assert introspected["active"] is True, introspected
    assert introspected["client_id"] == key_file["clientId"], introspected

    claims = jwt.decode(
        access_token,
        signing_key.key,
        algorithms=["RS256"],
        audience=introspected["aud"],
        issuer=issuer,
    )
    assert claims["sub"] == key_file["clientId"], claims
    assert claims["scope"] == "invoices:read", claims

    revoked = session.revoke_token(meta["revocation_endpoint"], token=access_token)
    assert revoked.status_code == 200, revoked.text
    after = session.introspect_token(meta["introspection_endpoint"], token=access_token).json()
    assert after == {"active": False}, after

    if result_path:
        with open(result_path, "w", encoding="utf-8") as f:
            json.dump({"revoked_token": access_token}, f)
    print("authlib/PyJWT flow: token, JWKS verification, introspection and revocation OK")


if __name__ == "__main__":
    main()
