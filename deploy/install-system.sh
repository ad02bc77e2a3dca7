#!/usr/bin/env bash
# System packages the project needs: fonts for rendered test pages and the synthetic suite,
# tesseract language packs for the offline text captions, chromium for the dashboard's browser
# tests. Installs only what is missing; needs root (or sudo) the first time.
set -euo pipefail
pkgs=(fonts-noto-core fonts-noto-cjk tesseract-ocr tesseract-ocr-eng tesseract-ocr-rus tesseract-ocr-ell
      tesseract-ocr-tha tesseract-ocr-kor tesseract-ocr-vie tesseract-ocr-ukr tesseract-ocr-ara tesseract-ocr-hin
      tesseract-ocr-osd tesseract-ocr-bul tesseract-ocr-mon tesseract-ocr-fas tesseract-ocr-mar tesseract-ocr-hye
      tesseract-ocr-ben tesseract-ocr-heb tesseract-ocr-kat tesseract-ocr-tam tesseract-ocr-chi-sim tesseract-ocr-jpn
      chromium postgresql)  # postgresql: the throw-away clusters of the PostgreSQL catalog tests (initdb/pg_ctl)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "installing system packages: ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
