"""api_keys: the gateway's API key file (`key_file`) and the program that writes it (`main`).

The file holds each key's id and the SHA-256 of the key, never a key: `api-keys new ID` prints
a new random key once and appends its line; `api-keys revoke ID` marks the line revoked.
"""
