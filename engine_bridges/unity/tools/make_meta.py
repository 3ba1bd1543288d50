"""Write the Unity .meta files the package needs (an immutable package -- installed from git or a
registry -- ignores assets that have none). GUIDs are derived from the path, so running this
again is a no-op and every checkout gets the same GUIDs. Existing .meta files are kept.

    python engine_bridges/unity/tools/make_meta.py
"""

from __future__ import annotations

import hashlib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "com.steernpc.unity"

TAIL = "  externalObjects: {}\n  userData: \n  assetBundleName: \n  assetBundleVariant: \n"
IMPORTERS = {
    ".cs": "MonoImporter:\n  externalObjects: {}\n  serializedVersion: 2\n  defaultReferences: []\n  executionOrder: 0\n"
    "  icon: {instanceID: 0}\n  userData: \n  assetBundleName: \n  assetBundleVariant: \n",
    ".asmdef": "AssemblyDefinitionImporter:\n" + TAIL,
    ".md": "TextScriptImporter:\n" + TAIL,
    ".txt": "TextScriptImporter:\n" + TAIL,
}


def meta_text(path: Path) -> str:
    rel = path.relative_to(PACKAGE).as_posix()
    guid = hashlib.md5(f"com.steernpc.unity/{rel}".encode()).hexdigest()
    head = f"fileFormatVersion: 2\nguid: {guid}\n"
    if path.is_dir():
        return head + "folderAsset: yes\nDefaultImporter:\n" + TAIL
    if path.name == "package.json":
        return head + "PackageManifestImporter:\n" + TAIL
    return head + IMPORTERS.get(path.suffix, "DefaultImporter:\n" + TAIL)


def main() -> int:
    written = 0
    for path in sorted(PACKAGE.rglob("*")):
        rel = path.relative_to(PACKAGE)
        if path.suffix == ".meta" or any(p.endswith("~") or p.startswith(".") for p in rel.parts):
            continue  # Samples~ and hidden files are not imported by Unity
        meta = path.with_name(path.name + ".meta")
        if not meta.exists():
            meta.write_text(meta_text(path))
            written += 1
            print(f"wrote {meta.relative_to(PACKAGE)}")
    print(f"{written} .meta file(s) written")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
