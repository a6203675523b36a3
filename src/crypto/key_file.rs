//! The application key file: the JSON document returned once, in `key_details`, holding the private key.

use serde::Serialize;
use zeroize::Zeroizing;

use super::CryptoError;

/// The key file's fields, serialized in this order: `type`, `keyId`, `key`, `appId`, `clientId`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct KeyFile<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    key_id: &'a str,
    key: &'a str,
    app_id: &'a str,
    client_id: &'a str,
}

/// Writes the key file for one application key, around its private key PEM (PKCS#1 for RSA, PKCS#8 for EC P-256
/// and Ed25519). The bytes hold the private key, so they are wiped when dropped.
pub fn application_key_file(
    key_id: &str,
    private_key_pem: &str,
    app_id: &str,
    client_id: &str,
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let file = KeyFile { kind: "application", key_id, key: private_key_pem, app_id, client_id };
    serde_json::to_vec(&file).map(Zeroizing::new).map_err(|_| CryptoError("writing the key file"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_come_in_the_documented_order() {
        let file =
            application_key_file("1", "-----BEGIN RSA PRIVATE KEY-----\nx\n", "2", "3@p").expect("file");
        assert_eq!(
            std::str::from_utf8(&file).expect("utf8"),
            r#"{"type":"application","keyId":"1","key":"-----BEGIN RSA PRIVATE KEY-----\nx\n","appId":"2","clientId":"3@p"}"#
        );
    }
}
