"""OCR routing by the script seen on the page image, and the engine recorded beside the caption.

Real pages failed where a page mixes English (LaTeX, code) into another script: the old routing read
the page with one engine first and routed on what it read, so Cyrillic came out as Latin
look-alikes and Korean as Latin. These pages are rendered here with Noto fonts, mixed the same way.
"""

from __future__ import annotations

import io

import pytest
from cap_pages import NOTO, PAGES, recall, render_page

from flywheel.captioning.annotate import Captioner

ocr = pytest.importorskip("flywheel.captioning.ocr")
pytestmark = pytest.mark.skipif(not ocr.tesseract_langs() >= {"eng", "rus", "kor", "ell", "tha"},
                                reason="tesseract packs eng/rus/kor/ell/tha not installed (deploy/install-system.sh)")
PAGE = {p[0]: p for p in PAGES}
LATEX = "\\documentclass{article} \\usepackage[utf8]{inputenc}\n\\begin{document} \\section{Intro}"


def _image(lang: str, mixed: bool = False):
    from PIL import Image

    _, font, idx, _, text = PAGE[lang]
    if mixed:
        text = LATEX + "\n" + text + "\n\\end{document}"
        font = font if lang not in ("ru", "el") else NOTO + "NotoSans-Regular.ttf"
    return Image.open(io.BytesIO(render_page(text, font, idx)))


@pytest.mark.parametrize("lang,script", [("ru", "Cyrillic"), ("ko", "Hangul")])
def test_a_page_mixing_latex_into_its_script_is_read_by_its_scripts_pack(lang, script):
    text, engine = ocr.read_text(_image(lang, mixed=True))
    assert engine.startswith("tesseract:") and engine.endswith(":" + script), engine
    _, _, _, unit, truth = PAGE[lang]
    assert recall(truth, text, unit) >= 0.8  # the script's letters, not Latin look-alikes
    assert "documentclass" in text  # the English lines are read too (eng is in the reader's packs)


@pytest.mark.slow
@pytest.mark.parametrize("lang,script", [("el", "Greek"), ("th", "Thai"), ("zh", "Han"), ("ja", "Japanese"),
                                         ("en", "Latin"), ("vi", "Latin")])
def test_the_probe_names_each_pages_script(lang, script):
    scores = ocr.probe(ocr._prepare(_image(lang)))
    best = max(scores, key=scores.get)
    assert best == script or {best, script} <= {"Han", "Japanese"}, scores  # both go to rapidocr


def test_a_blank_page_has_no_text_and_says_which_engine_looked():
    from PIL import Image

    text, engine = ocr.read_text(Image.new("RGB", (800, 600), "white"))
    assert text == "" and engine == "rapidocr:none"


def test_the_text_caption_records_which_engine_read_it_even_from_the_cache(tmp_path):
    import pyarrow as pa

    from flywheel.datasets import sample_id

    img = render_page(PAGE["ru"][4], PAGE["ru"][1], 0)
    t = pa.table({"id": [sample_id(img)], "task": ["t2i"], "image": [img], "caption": ["a page"]})
    for _ in range(2):  # generated, then a cache hit
        cap = Captioner(types=["text"], backend="offline", cache_path=str(tmp_path / "c.db"))
        out = cap(t)
        meta = out.column("caption_meta").to_pylist()[0]
        assert meta["text"].startswith("tesseract:") and meta["text"].endswith(":Cyrillic"), meta
        assert meta["general"] is None
        assert "библиотека" in out.column("captions").to_pylist()[0]["text"].lower()
    assert cap.stats["hits"] == 1


def test_tesseract_runs_one_thread_per_worker_and_offline_defaults_share_the_cores():
    from flywheel.cli.caption import offline_defaults

    ocr._capi()
    assert ocr.thread_settings()["tesseract_omp_thread_limit"] == "1"
    workers, batch, threads = offline_defaults(None, None)
    assert 1 <= workers <= 4 and batch == 2 and threads >= 1
    assert offline_defaults(0, 8)[:2] == (0, 8)
