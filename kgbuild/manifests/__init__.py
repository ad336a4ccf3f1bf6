"""The download manifests of kgbuild fetch: one TOML file per public source (package data, read with
importlib.resources; see kgbuild.fetch and docs/file-formats.md#fetch-manifests)."""
