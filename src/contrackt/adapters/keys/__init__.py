"""Master-key providers: local file, AWS KMS, Vault transit."""
