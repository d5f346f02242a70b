"""`lmk sidecar`: a local proxy for an application that cannot be given a key.

The application sets only ``HTTPS_PROXY`` (and trusts the sidecar's CA); the sidecar adds the
credential, a master key from a 0600 file or a JWT from a command, and forwards through the
central LlaMaKey proxy, which swaps in the real provider key. No provider key ever reaches the
sidecar's machine.

- `llamakey.sidecar.sources`: the credential (`MasterKeyFile`, `JwtCommand`);
- `llamakey.sidecar.addon`: `AddCredential`, the one addon;
- `llamakey.sidecar.server`: the master in upstream mode, its options, `run`.
"""
