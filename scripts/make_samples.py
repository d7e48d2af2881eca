#!/usr/bin/env python3
"""Write the small, deterministic sample datasets that the tests, demos and tokenizer training read.

    python scripts/make_samples.py --out samples --bad-out tests/data/bad

Every document is generated from text embedded in this file (a few paragraphs of English prose per
domain, sentences in other scripts, emoji, code templates): a word-level Markov chain recombines the
prose, templates generate code with real indentation. Nothing is read from the machine. Each output
file draws from its own ``random.Random`` seeded by the file's path, gzip is written with mtime=0 and
no file name, zstd at a fixed level, parquet with fixed row groups and options, so two runs write
byte-identical files (given the same pyarrow / zlib / libzstd versions).

Layout of --out (one data root, laid out like the hub repositories; file names as the real ones):

    tiiuae/falcon-refinedweb/data/train-0000N-of-05534-<16 hex>.parquet
        content, url, timestamp (timestamp[s]), dump, segment, image_urls (list<list<string>>)
    allenai/c4/en/c4-train.0000N-of-01024.json.gz, en/c4-validation.00000-of-00008.json.gz
        JSON lines: text, timestamp (str), url
    togethercomputer/RedPajama-Data-1T/
        arxiv/arxiv_<uuid>.jsonl  book/book.jsonl  c4/c4-train.00000-of-01024.jsonl
        common_crawl/2023-06/en_{head,middle}_0000.json.gz.dedup.classifier.jsonl.zst
        github/filtered_<32 hex>.sampled.jsonl  stackexchange/stackexchange.jsonl  wikipedia/wiki.jsonl
        JSON lines: text, meta {...}; some wikipedia and stackexchange rows carry the meta keys at top level
    EleutherAI/pile/train/{00,01}.jsonl.zst, val.jsonl.zst, test.jsonl.zst
        zstd JSON lines: text, meta.pile_set_name
    bigcode/starcoderdata/{python,javascript,rust,markdown}/train-0000N-of-000NN.parquet
        max_stars_repo_path, max_stars_repo_name, max_stars_count (int64), id, content
    internal/notes/part-00000.jsonl, part-00001.parquet
        id, body (the text), created_at
    README.md: documents and characters per file (generated, so it stays true)

Layout of --bad-out: deliberately broken files for the reader tests; its README.md says what each
holds and what a reader must do with it.

Lengths follow a long tail: a few documents of a handful of characters, most of a few hundred to a few
thousand, a fraction of 8k-40k characters, and a few over 80,000 characters (over 16k tokens).
One more file per mixed source (RefinedWeb, C4, RedPajama's arxiv, the Pile, StarCoder's python) is a
"long tail": only documents of 2k-4k, 4k-16k and over 16k tokens, a dozen or so per length bucket, so
that a dry run's long buckets can be hit to a tenth of a point (tests/test_mixture.py). They are new
files with their own seeds: the other files did not change when they were added.
"""

from __future__ import annotations

import argparse
import calendar
import dataclasses
import datetime
import gzip
import io
import json
import random
import shutil
import textwrap
import unicodedata
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

# --------------------------------------------------------------------------------------------------
# Embedded source material
# --------------------------------------------------------------------------------------------------

PROSE = {
    "general": [
        "Good bread needs very little: flour, water, salt and time. The dough should rest overnight in a cool kitchen, and in the morning it will have doubled in size and smell faintly sour. Shape it gently, without pressing out all of the air, and bake it in a hot oven with a tray of water on the bottom shelf. The steam keeps the crust soft long enough for the loaf to rise. When the bread is done it sounds hollow if you tap the bottom. Let it cool for at least an hour before cutting, because the inside is still cooking while it rests.",
        "We arrived in the old harbour town late in the afternoon, when the fishing boats were coming back and the cafes along the water were starting to fill up. The hotel was a narrow house with blue shutters and a staircase so steep that we had to carry our bags one at a time. From the window of our room we could see the lighthouse and, beyond it, a line of small islands that seemed to float above the sea. In the evening we walked along the pier and ate grilled sardines with bread and a simple salad. Nobody was in a hurry, and after a few days neither were we.",
        "Most vegetables want at least six hours of direct sun a day, so the first step in planning a garden is to watch where the light falls. Tomatoes and peppers like the warmest corner, while lettuce and spinach will tolerate some shade and even prefer it in the middle of summer. Add compost to the beds every spring and water deeply but not too often, because shallow watering encourages shallow roots. If the leaves turn yellow from the bottom up, the plant is probably hungry for nitrogen. Keep a notebook of what you planted and when, because next year you will not remember.",
        "Before the printing press, every book was copied by hand, and a single Bible could take a scribe more than a year to finish. Movable type changed the economics of knowledge almost overnight. Within fifty years of the first printed books, presses were operating in more than two hundred European cities, and millions of volumes were in circulation. Printers standardized spelling, introduced page numbers and title pages, and made it possible for scholars in different countries to cite the same edition. Historians still argue about how quickly ordinary people learned to read, but there is little doubt that the cost of a book fell dramatically.",
        "The match was decided in the last ten minutes. For most of the second half the visitors had defended deep, letting the home side keep the ball and waiting for a mistake. It came when a long pass was cut out near the halfway line, and three quick touches later the striker was alone with the goalkeeper. She did not hesitate. The stadium went quiet for a moment and then the small group of travelling fans began to sing. The coach said afterwards that the plan had been to stay patient, and that the players had followed it perfectly.",
        "A budget is not a punishment; it is a plan for where your money will go before it arrives. Start by writing down every fixed cost, such as rent, insurance and loan payments, and then estimate the variable ones like food and transport. Whatever is left should be split between savings and the things you actually enjoy. Many people find it easier to move a fixed amount into a separate account on the day they are paid. An emergency fund of three to six months of expenses gives you room to make decisions calmly when something unexpected happens.",
        "The orchestra tuned to a single note from the oboe, and then the hall fell silent. The first movement opened softly with the strings, a slow melody that was passed from the violins to the cellos and back again. By the end of the movement the whole orchestra had joined in, and the sound filled the room. The conductor barely moved his arms during the quiet passages, as if he were afraid of breaking something fragile. Later, in the interval, people stood in small groups in the foyer and talked about the soloist, who had played the difficult cadenza from memory.",
        "The storm reached the coast a little after midnight. Wind speeds of more than one hundred kilometres per hour were recorded at the airport, and several roads were closed because of fallen trees. By morning the rain had eased, but rivers in the valley continued to rise for another two days. Local officials opened schools as temporary shelters and asked residents to avoid unnecessary travel. Scientists say that warmer oceans are making storms like this one wetter and slower, which increases the risk of flooding far from the sea.",
        "Our neighbourhood library reopened this week after a long renovation. The reading room now has larger windows, a quiet corner for students and a small cafe near the entrance. Volunteers spent the summer sorting donated books, and the shelves are fuller than they have been in years. The children's section hosts a story hour every Saturday morning, and there is a repair workshop on the first Sunday of each month where people can bring broken lamps, bicycles and toasters.",
    ],
    "science": [
        "A star spends most of its life fusing hydrogen into helium in its core. The outward pressure from this fusion balances the inward pull of gravity, and the star remains stable for millions or billions of years. When the hydrogen runs out, the core contracts and heats up until helium begins to fuse into carbon. Stars much heavier than the Sun continue this process through a series of heavier elements, ending with iron, which cannot release energy by fusion. The core then collapses in less than a second, and the outer layers are blown away in a supernova that can briefly outshine an entire galaxy.",
        "In this study we examined the effect of regular physical activity on blood pressure in adults between forty and sixty-five years of age. Participants were randomly assigned to a supervised exercise program or to a control group that received general health advice. After twelve weeks, systolic blood pressure decreased by an average of six millimetres of mercury in the exercise group, compared with one millimetre in the control group. The difference was statistically significant. No serious adverse events were reported. These results suggest that moderate exercise is a safe and effective addition to standard treatment for mild hypertension.",
        "We train a series of decoder-only transformer models on a mixture of web text, books, code and scientific articles. Each document is tokenized with a byte-level tokenizer and followed by an end-of-text token before being packed into sequences of fixed length. We find that the proportion of long documents in the mixture has a measurable effect on the ability of the model to use distant context. Increasing the share of naturally long text during a short continued pretraining stage improves retrieval accuracy at long distances without hurting performance on standard short benchmarks. The loss on held-out data decreases smoothly as the amount of compute grows.",
        "The samples were stored at minus eighty degrees and thawed on ice immediately before analysis. Protein concentration was measured in triplicate, and the mean of the three readings was used in all subsequent calculations. We observed a strong correlation between the expression of the two genes across all tissues, although the relationship was weaker in the liver. Further experiments will be needed to determine whether this reflects a direct regulatory interaction or a shared response to the same external signal.",
    ],
    "legal": [
        "The plaintiff filed this action alleging that the defendant breached the terms of a written lease agreement. The district court granted summary judgment in favor of the defendant, concluding that the plaintiff had failed to provide timely notice as required by the contract. We review a grant of summary judgment de novo, viewing the evidence in the light most favorable to the nonmoving party. Summary judgment is appropriate only when there is no genuine dispute as to any material fact and the moving party is entitled to judgment as a matter of law. Having carefully reviewed the record, we conclude that a genuine dispute exists as to whether notice was given.",
        "The statute does not define the term, and we therefore give it its ordinary meaning. The defendant argues that the word should be read narrowly, but nothing in the text or the structure of the statute supports that reading. Where the language is plain, our inquiry ends there. The judgment of the district court is reversed, and the case is remanded for further proceedings consistent with this opinion. Each party shall bear its own costs on appeal. It is so ordered.",
        "The present invention relates generally to a container for storing liquids, and more particularly to a lid that can be opened with one hand. Conventional lids require the user to hold the container with one hand while turning the lid with the other. Such lids are inconvenient when the user is walking or driving. It is therefore an object of the present invention to provide a lid that is simple to manufacture and easy to operate.",
    ],
    "tech": [
        "To install the package, create a virtual environment and run the installer from the project directory. The configuration file lives in the home directory and is read once at startup, so changes take effect only after a restart. If the service fails to start, check the log file for a stack trace and make sure that the port is not already in use. Most problems are caused by an outdated version of a dependency. Running the command with the verbose flag prints every step, which is usually enough to find the cause.",
        "I have a list of records and I want to group them by date and count how many fall on each day. My first attempt used a loop with a dictionary, and it works, but it is slow when the file has more than a million lines. Is there a faster way to do this without loading everything into memory? I tried sorting the file first, but that did not help much. Any suggestions would be appreciated.",
        "The simplest fix is to stream the file and keep only the running counts. You do not need to sort anything, because a dictionary lookup is constant time on average. If memory is still a problem, write partial results to disk every hundred thousand lines and merge them at the end. This is the same idea that external sorting and most map reduce systems use. In my tests this approach processed ten million lines in under a minute on an ordinary laptop.",
        "The cache is invalidated whenever the configuration changes, so the first request after a deploy is always slow. We considered warming the cache in the background, but that would hide real errors during startup. Instead the health check now waits until the cache is ready before the instance receives traffic. This keeps the error rate flat during a rolling deploy and makes the latency graph much easier to read.",
    ],
    "fiction": [
        "The house at the end of the lane had been empty for as long as anyone in the village could remember. Its windows were dark, and ivy had climbed all the way to the chimney. Children dared each other to touch the gate, and then ran back laughing. Margaret was the first to go inside. She found the door unlocked, and the hallway smelled of dust and old paper. On the table in the kitchen there was a single cup, as if someone had just finished their tea and stepped out for a moment.",
        "You should not have come back, said the old man, without turning around. He was standing at the window, watching the rain. Thomas put his bag down by the door and waited. For a long time neither of them spoke. Then the old man sighed, pulled out a chair and told him to sit. Well, he said, since you are here, you may as well eat something. The soup was thin but hot, and Thomas realised that he had not eaten since the morning.",
        "By the third week of the voyage the crew had stopped talking about home. The wind had failed them twice, and the water in the barrels tasted of wood and iron. The captain spent his nights on deck with the charts spread out under a lantern, measuring distances that never seemed to shrink. One morning a bird landed on the rail, and the youngest sailor shouted that land must be near. Nobody believed him, but everyone looked toward the horizon all the same.",
    ],
}

FOREIGN = {
    "zh": ["今天的天气很好，我们决定去公园散步。", "这座城市的历史可以追溯到两千多年前。", "他每天早上六点起床，先喝一杯热茶，然后开始工作。",
           "图书馆里有很多关于天文学和数学的书。", "数据清洗是训练语言模型之前非常重要的一步。", "春节期间，很多人会回家和家人团聚。",
           "这个软件的新版本修复了几个严重的错误。", "长江是中国最长的河流，全长约六千三百公里。"],
    "ja": ["今日はとても暑いので、冷たいお茶を飲みましょう。", "東京駅から新幹線に乗って、京都まで約二時間半かかります。",
           "このライブラリは大きなデータセットを効率よく処理できます。", "桜の季節になると、多くの人が公園で花見を楽しみます。",
           "彼女は毎晩、寝る前に小説を少しずつ読んでいます。", "会議は午後三時から始まる予定です。", "ラーメンの味は地域によって大きく異なります。"],
    "ko": ["오늘은 날씨가 맑아서 산책하기 좋습니다.", "이 프로그램은 대용량 파일을 빠르게 처리합니다.",
           "서울에는 오래된 궁궐과 현대적인 건물이 함께 있습니다.", "저는 주말마다 도서관에서 공부를 합니다."],
    "ar": ["اللغة العربية من أكثر اللغات انتشاراً في العالم.", "ذهبنا إلى السوق القديم واشترينا بعض التوابل والقهوة.",
           "تقع مدينة القاهرة على ضفاف نهر النيل.", "يعمل الفريق على تحسين جودة البيانات قبل تدريب النموذج.", "شكراً جزيلاً على مساعدتك."],
    "he": ["ירושלים היא עיר עתיקה עם היסטוריה ארוכה.", "אני לומד לתכנת בשפת פייתון כבר שנתיים.",
           "הספרייה פתוחה מיום ראשון עד יום חמישי.", "תודה רבה על העזרה!"],
    "hi": ["भारत में कई भाषाएँ बोली जाती हैं।", "आज सुबह बारिश हुई और मौसम ठंडा हो गया।", "यह पुस्तकालय शहर के बीच में स्थित है।",
           "मुझे चाय के साथ समोसे खाना बहुत पसंद है।", "गंगा नदी हिमालय से निकलती है।"],
    "vi": ["Hà Nội là thủ đô của Việt Nam.", "Tôi thích uống cà phê sữa đá vào buổi sáng.", "Phở là một món ăn truyền thống nổi tiếng.",
           "Chúng tôi đang xây dựng một bộ dữ liệu mới cho mô hình ngôn ngữ."],
    "ru": ["Москва — столица России и крупнейший город страны.", "Мы долго гуляли по набережной и разговаривали о книгах.",
           "Этот алгоритм работает быстрее на больших объёмах данных.", "Зимой здесь бывает очень холодно и много снега."],
    "el": ["Η Αθήνα είναι η πρωτεύουσα της Ελλάδας.", "Το πρωί πίνω πάντα έναν ελληνικό καφέ.", "Η θάλασσα ήταν ήρεμη και ζεστή."],
    "fr": ["Le café de la gare ouvre à six heures du matin.", "Nous avons visité le musée d'Orsay pendant l'été.",
           "Il faut préparer les données avant l'entraînement du modèle.", "Où est la bibliothèque la plus proche ?"],
    "de": ["Die Straßenbahn fährt alle zehn Minuten über die Brücke.", "Größere Datensätze benötigen mehr Speicher und Geduld.",
           "Das Museum ist montags geschlossen."],
    "es": ["El mercado abre temprano los sábados y siempre hay mucha gente.", "¿Dónde está la estación de tren más cercana?",
           "La reunión se aplazó hasta el próximo jueves."],
    "th": ["กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทย", "ฉันชอบกินข้าวเหนียวมะม่วง"],
}
# Decomposed forms (base letter + combining marks), which real scraped text also contains.
FOREIGN["vi"] += [unicodedata.normalize("NFD", s) for s in FOREIGN["vi"][:2]]
FOREIGN["fr"] += ["Le cafe\u0301 ferme a\u0300 minuit, me\u0302me le dimanche.", "Son re\u0301sume\u0301 e\u0301tait nai\u0308f."]
EMOJI = ["🙂", "🚀", "🎉", "👩‍💻", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇯🇵", "🇫🇷", "🇧🇷", "🇮🇳", "👍🏽", "❤️", "🔥", "☕", "📚", "🧑🏿‍🔬", "🤷‍♀️", "✅", "⚠️", "😂"]
TINY = ["OK", "Thanks! 🙏", "Sold out.", "See you tomorrow 👋", "谢谢！", "ありがとう", "شكرا لك", "תודה", "Merci beaucoup",
        "Page not found.", "Hello, world!", "नमस्ते", "Cảm ơn bạn!", "Привет!", "👩‍💻🚀", "🇯🇵 🇫🇷 🇧🇷", "Yes.", "lol",
        "Closed as duplicate.", "Cafe\u0301 open 8-5.", "Done ✅", "N/A, see above", "안녕하세요", "Γεια σου!", "Fixed in 2.3.1"]
TINY_CODE = {"python": ['__version__ = "0.1.0"\n', "from .core import *  # noqa\n", "pass\n"],
             "javascript": ["module.exports = {};\n", "export * from './core';\n", "'use strict';\n"],
             "rust": ["pub mod utils;\n", "mod tests;\n", "pub use crate::core::*;\n"],
             "markdown": ["# TODO\n", "See [docs](docs/).\n", "WIP 🚧\n"],
             "shell": ["#!/bin/sh\nexec make \"$@\"\n", "#!/bin/sh\ntrue\n"]}

VERBS = ["load", "parse", "build", "merge", "split", "count", "fetch", "encode", "decode", "flush",
         "render", "validate", "normalize", "compute", "update", "resolve", "scan", "emit", "collect", "filter"]
NOUNS = ["record", "buffer", "token", "shard", "config", "batch", "user", "session", "path", "index",
         "cache", "request", "payload", "header", "matrix", "vector", "node", "edge", "event", "metric"]
DOMAINS = ["dailyharbor.net", "greenthumbguide.org", "techjournal.io", "blog.janedoe.me", "recipes-at-home.com",
           "localnews24.co.uk", "forum.openhardware.dev", "travelnotes.jp", "www.citylibrary.org", "stormwatch.info"]
USERS = ["acme-labs", "jdoe", "openhardware", "kazuki-t", "maria-garcia", "lukasz", "priya-dev", "ahmed-k", "noor-s", "data-tools"]

# Character-length buckets (lo, hi, weight) per profile: a long tail without floating-point maths.
PROFILES = {
    "web": [(5, 40, 2), (40, 300, 10), (300, 1200, 35), (1200, 3000, 30), (3000, 8000, 15), (8000, 20000, 6), (20000, 40000, 2)],
    "c4": [(5, 40, 2), (40, 300, 15), (300, 1200, 40), (1200, 3000, 28), (3000, 8000, 10), (8000, 20000, 4), (20000, 30000, 1)],
    "article": [(5, 40, 1), (40, 300, 3), (300, 2000, 20), (2000, 6000, 36), (6000, 15000, 28), (15000, 40000, 12)],
    "book": [(2000, 8000, 20), (8000, 20000, 45), (20000, 40000, 35)],
    "code": [(5, 40, 3), (40, 600, 15), (600, 2500, 40), (2500, 8000, 30), (8000, 25000, 10), (25000, 40000, 2)],
    "small": [(60, 400, 1), (400, 1500, 1)],
    "short": [(5, 40, 4), (40, 300, 30), (300, 1200, 45), (1200, 3000, 17), (3000, 8000, 3), (8000, 12000, 1)],
}
TINY_MAX = 40
LONG = 80_000  # "very long": more than this many characters (well over 16k tokens)

# --------------------------------------------------------------------------------------------------
# Text generation
# --------------------------------------------------------------------------------------------------


def seeded(name: str) -> random.Random:
    """A generator of its own for each file: adding a file never changes another."""
    return random.Random(f"mixprep-samples:{name}")


def _ends(word: str) -> bool:
    return word[-1] in ".!?"


class Markov:
    """Word-level chain (order 2, falling back to order 1) over embedded paragraphs."""

    def __init__(self, paragraphs: list[str], start_paragraphs: list[str]):
        self.follow2: dict[tuple[str, str], list[str]] = {}
        self.follow1: dict[str, list[str]] = {}
        self.starts: list[tuple[str, str]] = []
        for para in paragraphs:
            words = para.split()
            for i in range(len(words) - 1):
                self.follow1.setdefault(words[i], []).append(words[i + 1])
                if i + 2 < len(words):
                    self.follow2.setdefault((words[i], words[i + 1]), []).append(words[i + 2])
        for para in start_paragraphs:
            words = para.split()
            self.starts += [(words[i], words[i + 1]) for i in range(len(words) - 1) if i == 0 or _ends(words[i - 1])]

    def sentence(self, rng: random.Random, max_words: int = 40) -> str:
        a, b = rng.choice(self.starts)
        out = [a, b]
        while not _ends(b) and len(out) < max_words:
            nxt = self.follow2.get((a, b)) if rng.random() < 0.8 else None
            nxt = nxt or self.follow1.get(b)
            if not nxt:
                break
            a, b = b, rng.choice(nxt)
            out.append(b)
        text = " ".join(out)
        return text if _ends(text) else text.rstrip(",;:") + "."


CHAINS = {d: Markov(paras + (PROSE["general"] if d != "general" else []), paras) for d, paras in PROSE.items()}


def pick_length(rng: random.Random, profile: str) -> int:
    buckets = PROFILES[profile]
    lo, hi, _ = rng.choices(buckets, weights=[w for _, _, w in buckets])[0]
    return rng.randint(lo, hi)


class TextGen:
    """Prose in a domain, with other scripts, emoji and combining marks sprinkled in at rate ``mix``."""

    def __init__(self, rng: random.Random):
        self.rng = rng

    def sentence(self, domain: str = "general") -> str:
        return CHAINS[domain].sentence(self.rng)

    def foreign(self, lang: str | None = None, n: int = 1) -> str:
        lang = lang or self.rng.choice(sorted(FOREIGN))
        sep = "" if lang in ("zh", "ja") else " "
        return sep.join(self.rng.sample(FOREIGN[lang], min(n, len(FOREIGN[lang]))))

    def paragraph(self, domain: str = "general", mix: int = 0, lo: int = 2, hi: int = 6) -> str:
        rng = self.rng
        sentences = [self.sentence(domain) for _ in range(rng.randint(lo, hi))]
        if mix and rng.randint(1, 100) <= mix:
            roll = rng.randint(1, 4)
            if roll == 1:
                sentences.insert(rng.randint(0, len(sentences)), self.foreign())
            elif roll == 2:
                sentences[-1] += " " + "".join(rng.choice(EMOJI) for _ in range(rng.randint(1, 3)))
            elif roll == 3:
                return self.foreign(n=rng.randint(2, 4))
            else:
                sentences.append(f"({self.foreign()})")
        return " ".join(sentences)

    def prose(self, domain: str, target: int, sep: str = "\n\n", mix: int = 0, first: str = "") -> str:
        parts = [first] if first else []
        size = len(first)
        while size < target:
            para = self.paragraph(domain, mix)
            parts.append(para)
            size += len(para) + len(sep)
        return sep.join(parts)

    def title(self, domain: str = "general", words: int = 6) -> str:
        ws = [w.strip(".,;:!?") for w in self.sentence(domain).split()][:words]
        return " ".join(w[:1].upper() + w[1:] for w in ws if w)

    def slug(self) -> str:
        ws = [w.strip(".,;:!?").lower() for w in self.sentence().split()]
        return "-".join(w for w in ws[: self.rng.randint(3, 6)] if w.isalpha()) or "page"

    def mix_level(self) -> int:
        """Per-document share (in %) of paragraphs that carry something beyond English."""
        return self.rng.choice([0, 0, 0, 0, 5, 15, 40])


def tiny_text(rng: random.Random, i: int = 0) -> str:
    return rng.choice(TINY) + ("" if rng.randint(0, 1) else " " + rng.choice(EMOJI))


def unique_docs(rng, n, make, profile, long_at=None, tiny=tiny_text) -> list[str]:
    """``n`` distinct non-blank texts; ``make(rng, i, target)`` writes one of about ``target`` chars."""
    long_at = long_at or {}
    seen: set[str] = set()
    docs = []
    for i in range(n):
        target = long_at.get(i) or pick_length(rng, profile)
        for _ in range(100):
            text = tiny(rng, i) if target <= TINY_MAX else make(rng, i, target)
            if text.strip() and text not in seen:
                break
            target = long_at.get(i) or pick_length(rng, profile)
        else:
            raise RuntimeError(f"could not make a distinct document #{i}")
        seen.add(text)
        docs.append(text)
    return docs


def long_positions(rng: random.Random, n: int, targets: list[int]) -> dict[int, int]:
    """Spread very long documents at random rows (never row 0, so readers meet short ones first)."""
    rows = rng.sample(range(1, n), len(targets))
    return dict(zip(rows, targets))


# Character lengths of the "long tail" files (about 4.9 characters a token with the project's tokenizer):
# documents of 2k-4k, 4k-16k and over 16k tokens, the mixtures' length buckets. Real corpora have
# thousands of documents in each bucket; a dry run of a few hundred thousand tokens needs a dozen or
# so per bucket for a bucket's share to be reachable to a tenth of a point by some choice of them.
SPAN_2K, SPAN_4K, SPAN_16K = (11_000, 18_000), (22_000, 75_000), (86_000, 200_000)


def long_tail(rng: random.Random, *spans: tuple[tuple[int, int], int]) -> dict[int, int]:
    """Targets for every row of a long-tail file: ``count`` documents in each (lo, hi) span, shuffled."""
    targets = [rng.randint(lo, hi) for (lo, hi), count in spans for _ in range(count)]
    rng.shuffle(targets)
    return dict(enumerate(targets))


# --------------------------------------------------------------------------------------------------
# Code generation (real indentation, comments, docstrings)
# --------------------------------------------------------------------------------------------------


def camel(*words: str) -> str:
    return words[0] + "".join(w.title() for w in words[1:])


def comment_text(tg: TextGen) -> str:
    rng = tg.rng
    roll = rng.randint(1, 10)
    if roll == 1:
        return tg.foreign(rng.choice(["zh", "ja", "ru", "fr"]))
    if roll == 2:
        return f"TODO({rng.choice(USERS)}): {rng.choice(VERBS)} the {rng.choice(NOUNS)} lazily"
    return textwrap.shorten(tg.sentence("tech"), width=rng.randint(40, 80), placeholder="...")


def py_expr(rng: random.Random, names: list[str]) -> str:
    a, noun = rng.choice(names), rng.choice(NOUNS)
    return rng.choice([
        f"len({a})", f"{a}.get({noun!r}, {rng.randint(0, 64)})", f"[x for x in {a} if x is not None]",
        f"{{k: v for k, v in {a}.items() if v}}", f"sorted({a}, key=lambda item: item[{rng.randint(0, 2)}])",
        f"{a} * {rng.randint(2, 9)} + {rng.randint(0, 99)}", f'f"{noun}-{{{a}}}"',
        f'os.path.join({a}, "{noun}.json")', f're.sub(r"\\s+", " ", str({a})).strip()', f"max({a}, default=0)",
    ])


def py_block(tg: TextGen, names: list[str], indent: str, depth: int = 1) -> list[str]:
    rng, lines, names = tg.rng, [], list(names)
    kinds = ["assign", "assign", "comment", "for", "if", "try", "with"] if depth < 3 else ["assign", "comment"]
    for _ in range(rng.randint(2, 5)):
        kind = rng.choice(kinds)
        if kind == "assign":
            var = f"{rng.choice(NOUNS)}_{rng.choice(['count', 'list', 'map', 'id', 'size', 'name'])}"
            lines.append(f"{indent}{var} = {py_expr(rng, names)}")
            names.append(var)
        elif kind == "comment":
            lines.append(f"{indent}# {comment_text(tg)}")
        elif kind == "for":
            item = rng.choice(["item", "row", "line", "key", "chunk"])
            lines.append(f"{indent}for {item} in {rng.choice(names)}:")
            lines += py_block(tg, names + [item], indent + "    ", depth + 1)
        elif kind == "if":
            lines.append(f"{indent}if not {rng.choice(names)}:")
            if rng.randint(0, 1):
                lines.append(f"{indent}    return {rng.choice(['None', '[]', '0', '{}'])}")
            else:
                lines.append(f'{indent}    raise ValueError(f"empty {rng.choice(NOUNS)}: {{{rng.choice(names)}!r}}")')
        elif kind == "try":
            lines.append(f"{indent}try:")
            lines += py_block(tg, names, indent + "    ", depth + 1)
            lines.append(f"{indent}except (KeyError, ValueError) as exc:")
            lines.append(f'{indent}    logger.warning("could not {rng.choice(VERBS)} {rng.choice(NOUNS)}: %s", exc)')
        else:
            lines.append(f'{indent}with open({rng.choice(names)}, encoding="utf-8") as fh:')
            lines.append(f"{indent}    for line in fh:")
            lines += py_block(tg, names + ["line"], indent + "        ", depth + 2)
        if rng.randint(1, 6) == 1:
            lines.append("")
    return lines


def py_function(tg: TextGen, indent: str = "", method: bool = False) -> str:
    rng = tg.rng
    args = rng.sample(NOUNS, rng.randint(1, 3))
    name = f"{rng.choice(VERBS)}_{rng.choice(NOUNS)}"
    sig = ", ".join((["self"] if method else []) + args)
    summary = f'{name.replace("_", " ").capitalize()} {rng.choice(["in place", "from disk", "for one shard", "lazily"])}.'
    if rng.randint(0, 1):
        pad = indent + "    "
        doc = [f'{pad}"""{summary}', ""] + textwrap.wrap(tg.sentence("tech"), 88, initial_indent=pad, subsequent_indent=pad)
        doc += ["", f"{pad}Args:"] + [f"{pad}    {a}: the {a} to {rng.choice(VERBS)}." for a in args] + [f'{pad}"""']
    else:
        doc = [f'{indent}    """{summary}"""']
    body = py_block(tg, args, indent + "    ")
    ret = f"{indent}    return {rng.choice(args + ['None', 'True'])}"
    return "\n".join([f"{indent}def {name}({sig}):"] + doc + body + [ret])


def py_class(tg: TextGen) -> str:
    rng = tg.rng
    a, b = rng.sample(NOUNS, 2)
    fields = rng.sample(NOUNS, rng.randint(1, 3))
    lines = [f"class {a.title()}{b.title()}:", f'    """{comment_text(tg)}"""', "",
             f"    def __init__(self, {', '.join(fields)}):"] + [f"        self.{f} = {f}" for f in fields]
    methods = [py_function(tg, "    ", method=True) for _ in range(rng.randint(1, 3))]
    return "\n".join(lines) + "\n\n" + "\n\n".join(methods)


def python_file(tg: TextGen, target: int) -> str:
    rng = tg.rng
    head = [f'"""{tg.sentence("tech")}"""', ""] if rng.randint(0, 3) else []
    imports = sorted(["import logging", "import os", "import re"] + rng.sample(["import json", "import sys", "import time"], rng.randint(0, 2)))
    head += imports + ["from pathlib import Path", "", "logger = logging.getLogger(__name__)", ""]
    head += [f"MAX_{rng.choice(NOUNS).upper()} = {rng.choice([64, 128, 1024, 4096])}", "", "", ""]
    parts, size = [], 0
    while size < target:
        part = py_class(tg) if rng.randint(1, 4) == 1 else py_function(tg)
        parts.append(part)
        size += len(part)
    tail = ["", "", 'if __name__ == "__main__":', f"    {rng.choice(['main()', 'sys.exit(main())'])}"] if rng.randint(0, 2) == 0 else []
    return "\n".join(head) + "\n\n\n".join(parts) + "\n".join(tail) + "\n"


def js_block(tg: TextGen, names: list[str], indent: str, depth: int = 1) -> list[str]:
    rng, lines, names = tg.rng, [], list(names)
    for _ in range(rng.randint(2, 4)):
        kind = rng.choice(["const", "const", "comment", "for", "if", "try"] if depth < 3 else ["const", "comment"])
        a = rng.choice(names)
        if kind == "const":
            var = camel(rng.choice(NOUNS), rng.choice(["count", "list", "map", "id"]))
            expr = rng.choice([f"{a}.length", f"{a}.map((x) => x.{rng.choice(NOUNS)})", f"await fetch(`/api/{rng.choice(NOUNS)}/${{{a}}}`)",
                               f"Object.keys({a}).filter(Boolean)", f"`${{{a}}}-{rng.choice(NOUNS)}`", f"JSON.parse({a} || '{{}}')"])
            lines.append(f"{indent}const {var} = {expr};")
            names.append(var)
        elif kind == "comment":
            lines.append(f"{indent}// {comment_text(tg)}")
        elif kind == "for":
            lines.append(f"{indent}for (const item of {a}) {{")
            lines += js_block(tg, names + ["item"], indent + "  ", depth + 1) + [f"{indent}}}"]
        elif kind == "if":
            lines += [f"{indent}if (!{a}) {{", f"{indent}  return {rng.choice(['null', '[]', '0', 'undefined'])};", f"{indent}}}"]
        else:
            lines.append(f"{indent}try {{")
            lines += js_block(tg, names, indent + "  ", depth + 1)
            lines += [f"{indent}}} catch (err) {{", f"{indent}  console.error('{rng.choice(VERBS)} failed', err);", f"{indent}}}"]
    return lines


def javascript_file(tg: TextGen, target: int) -> str:
    rng = tg.rng
    parts, names, size = ["'use strict';", f"const {rng.choice(NOUNS)}Store = require('./{rng.choice(NOUNS)}');"], [], 0
    while size < target:
        args = rng.sample(NOUNS, rng.randint(1, 3))
        name = camel(rng.choice(VERBS), rng.choice(NOUNS))
        doc = ["/**", f" * {comment_text(tg)}"] + [f" * @param {{string}} {a} - the {a}" for a in args] + [" */"]
        body = js_block(tg, args, "  ")
        part = "\n".join(doc + [f"async function {name}({', '.join(args)}) {{"] + body + [f"  return {args[0]};", "}"])
        parts.append(part)
        names.append(name)
        size += len(part)
    parts.append(f"module.exports = {{ {', '.join(names)} }};")
    return "\n\n".join(parts) + "\n"


def rust_fn(tg: TextGen) -> str:
    rng = tg.rng
    name, arg = f"{rng.choice(VERBS)}_{rng.choice(NOUNS)}", rng.choice(NOUNS)
    arms = [f'            "{rng.choice(NOUNS)}" => Ok({rng.randint(0, 99)}),' for _ in range(rng.randint(1, 4))]
    return "\n".join([
        f"    /// {comment_text(tg)}", f"    pub fn {name}(&self, {arg}: &str) -> Result<usize, String> {{",
        f"        // {comment_text(tg)}", f"        let key = {arg}.trim().to_lowercase();", "        match key.as_str() {",
        *arms, f'            other => Err(format!("unknown {arg}: {{}}", other)),', "        }", "    }"])


def rust_file(tg: TextGen, target: int) -> str:
    rng = tg.rng
    parts, size = ["use std::collections::HashMap;\nuse std::fmt;"], 0
    while size < target:
        a, b = rng.sample(NOUNS, 2)
        ty = a.title() + b.title()
        types = ["u64", "String", "Vec<u8>", "HashMap<String, usize>", "Option<u32>"]
        fields = [f"    pub {f}: {rng.choice(types)}," for f in rng.sample(NOUNS, 3)]
        methods = [rust_fn(tg) for _ in range(rng.randint(1, 3))]
        part = "\n".join([f"/// {tg.sentence('tech')}", "#[derive(Debug, Clone, Default)]", f"pub struct {ty} {{", *fields, "}", "",
                          f"impl {ty} {{", "\n\n".join(methods), "}"])
        parts.append(part)
        size += len(part)
    parts.append("#[cfg(test)]\nmod tests {\n    use super::*;\n\n    #[test]\n    fn builds_default() {\n"
                 f"        let value = {ty}::default();\n        assert!(format!(\"{{:?}}\", value).len() > 0);\n    }}\n}}")
    return "\n\n".join(parts) + "\n"


def shell_file(tg: TextGen, target: int) -> str:
    rng = tg.rng
    ind = rng.choice(["\t", "  ", "    "])
    parts, size = ["#!/usr/bin/env bash\nset -euo pipefail\n"], 0
    while size < target:
        fn, var = f"{rng.choice(VERBS)}_{rng.choice(NOUNS)}", rng.choice(NOUNS).upper()
        part = "\n".join([f"# {comment_text(tg)}", f"{fn}() {{", f'{ind}local dir="${{1:-./{rng.choice(NOUNS)}s}}"',
                          f'{ind}for f in "$dir"/*.{rng.choice(["json", "log", "txt", "parquet"])}; do',
                          f'{ind}{ind}[ -e "$f" ] || continue', f'{ind}{ind}echo "{rng.choice(VERBS)}: $f" >&2',
                          f'{ind}{ind}{var}=$(wc -l < "$f")', f"{ind}done", "}"])
        parts.append(part)
        size += len(part)
    parts.append(f'{fn} "$@"')
    return "\n\n".join(parts) + "\n"


CODE_MAKERS = {"python": python_file, "javascript": javascript_file, "rust": rust_file, "shell": shell_file}


def markdown_file(tg: TextGen, target: int) -> str:
    rng = tg.rng
    name = f"{rng.choice(NOUNS)}-{rng.choice(NOUNS)}"
    parts = [f"# {name}", tg.paragraph("tech", mix=20)]
    while sum(map(len, parts)) < target:
        roll = rng.randint(1, 4)
        if roll == 1:
            lang = rng.choice(["python", "javascript", "rust", "shell"])
            code = CODE_MAKERS[lang](tg, rng.randint(100, 500)).rstrip("\n")
            parts += [f"## {tg.title('tech', 4)}", f"```{'bash' if lang == 'shell' else lang}\n{code}\n```"]
        elif roll == 2:
            parts.append("\n".join(f"- {comment_text(tg)}" for _ in range(rng.randint(2, 6))))
        elif roll == 3:
            rows = [f"| `{rng.choice(NOUNS)}` | {rng.choice(['string', 'int', 'bool'])} | {tg.title('tech', 5)} |"
                    for _ in range(rng.randint(2, 5))]
            parts.append("| option | type | description |\n| --- | --- | --- |\n" + "\n".join(rows))
        else:
            parts += [f"## {tg.title('tech', 3)}", tg.paragraph("tech", mix=20)]
    return "\n\n".join(parts) + "\n"


def code_file(tg: TextGen, lang: str, target: int) -> str:
    return markdown_file(tg, target) if lang == "markdown" else CODE_MAKERS[lang](tg, target)


# --------------------------------------------------------------------------------------------------
# Document styles
# --------------------------------------------------------------------------------------------------


def web_page(tg: TextGen, target: int, sep: str = "\n") -> str:
    rng = tg.rng
    first = tg.title() if rng.randint(0, 2) else ""
    text = tg.prose("general", target, sep=sep, mix=tg.mix_level(), first=first)
    if rng.randint(1, 8) == 1:
        text += sep + rng.choice(["Share this: Facebook | Twitter | Email", "Posted in Uncategorized", "© 2021 All rights reserved."])
    return text


def book_text(tg: TextGen, target: int) -> str:
    rng, parts, size, chapter = tg.rng, [tg.title("fiction", 5).upper()], 0, 1
    while size < target:
        parts.append(f"CHAPTER {chapter}\n")
        for _ in range(rng.randint(4, 14)):
            para = tg.paragraph("fiction", mix=3, lo=3, hi=9)
            parts.append(para if rng.randint(0, 3) else f"\u201c{tg.sentence('fiction')}\u201d she asked.")
            size += len(parts[-1])
        chapter += 1
    return "\n\n".join(parts)


def latex_paper(tg: TextGen, target: int) -> str:
    rng = tg.rng
    parts, size, n = [r"\section{Introduction}"], 0, 0
    while size < target:
        para = tg.paragraph("science", mix=2) + f" \\cite{{{rng.choice(USERS).replace('-', '')}{rng.randint(2015, 2023)}}}."
        parts.append(para)
        if rng.randint(1, 3) == 1:
            n += 1
            parts.append(rng.choice([
                "\\begin{equation}\n  \\mathcal{L}(\\theta) = -\\sum_{t=1}^{T} \\log p_\\theta(x_t \\mid x_{<t})\n"
                f"  \\label{{eq:{n}}}\n\\end{{equation}}",
                f"where $\\alpha = {rng.randint(1, 9)}/{rng.randint(10, 99)}$ and $n \\geq {rng.randint(2, 512)}$.",
                "\\begin{table}[h]\n\\centering\n\\begin{tabular}{lcc}\n\\hline\nModel & Loss & Acc. \\\\\n\\hline\n"
                f"A & {rng.randint(100, 400) / 100} & {rng.randint(50, 99)}.{rng.randint(0, 9)} \\\\\n\\hline\n\\end{{tabular}}\n\\end{{table}}",
                f"\\subsection{{{tg.title('science', 4)}}}",
            ]))
        size += len(para)
    return "\n\n".join(parts)


def wiki_article(tg: TextGen, target: int, title: str, lang: str = "en") -> str:
    if lang != "en":
        return f"{title}\n\n" + "\n\n".join(tg.foreign(lang, tg.rng.randint(2, 4)) for _ in range(tg.rng.randint(1, 4)))
    rng, parts = tg.rng, [title, tg.paragraph("general", mix=10)]
    while sum(map(len, parts)) < target:
        if rng.randint(1, 3) == 1:
            parts.append(rng.choice(["History", "Geography", "Culture", "Economy", "See also", "Etymology"]))
        parts.append(tg.paragraph(rng.choice(["general", "science"]), mix=10))
    return "\n\n".join(parts)


def stackexchange_post(tg: TextGen, target: int, style: str = "pile") -> str:
    rng = tg.rng
    q = tg.paragraph("tech", mix=5)
    if rng.randint(0, 1):
        lang = rng.choice(["python", "javascript", "shell"])
        q += "\n\n" + "\n".join("    " + ln for ln in code_file(tg, lang, rng.randint(80, 400)).splitlines())
    answers = []
    while len(q) + sum(map(len, answers)) < target:
        answers.append(tg.prose("tech", rng.randint(100, 900), mix=5))
    if style == "pile":
        return f"Q:\n\n{tg.title('tech', 8)}\n\n{q}\n\n" + "".join(f"A:\n\n{a}\n\n" for a in answers).rstrip()
    return f"Question: {tg.title('tech', 8)}?\n{q}\n" + "".join(f"\nAnswer: {a}\n" for a in answers).rstrip()


def legal_opinion(tg: TextGen, target: int) -> str:
    rng = tg.rng
    head = (f"UNITED STATES COURT OF APPEALS\nFOR THE {rng.choice(['NINTH', 'SECOND', 'FIFTH', 'TENTH'])} CIRCUIT\n\n"
            f"{rng.choice(USERS).upper()} CORP., Plaintiff-Appellant,\nv.\n{rng.choice(NOUNS).upper()} HOLDINGS LLC, Defendant-Appellee.\n\n"
            f"No. {rng.randint(10, 23)}-{rng.randint(1000, 9999)}\n\nOPINION")
    return tg.prose("legal", target, sep="\n\n", first=head)


def irc_log(tg: TextGen, target: int) -> str:
    rng, nicks, lines, size, minute = tg.rng, rng_nicks(tg.rng), [], 0, 0
    while size < target:
        minute += rng.randint(0, 3)
        msg = rng.choice([textwrap.shorten(tg.sentence("tech"), 90, placeholder="..."), "anyone know how to fix grub after an upgrade?",
                          "sudo apt-get install -f", "did you try rebooting?", "that worked, thanks! 🎉", tg.foreign()])
        lines.append(f"[{minute // 60 % 24:02d}:{minute % 60:02d}] <{rng.choice(nicks)}> {msg}")
        size += len(lines[-1])
    return "\n".join(lines)


def rng_nicks(rng: random.Random) -> list[str]:
    return rng.sample(["ubottu", "kazu", "marta_", "linuxfan", "d3v", "ahmed", "zoë", "FloodBot2", "sam_", "ikonia"], 4)


def email(tg: TextGen, target: int) -> str:
    rng = tg.rng
    a, b = rng.sample(["jeff.skilling", "sara.shackleton", "kay.mann", "vince.kaminski", "mark.taylor"], 2)
    head = (f"Message-ID: <{rng.randint(10**7, 10**8)}.{rng.randint(10**12, 10**13)}.JavaMail.evans@thyme>\n"
            f"Date: {rng.choice(['Mon', 'Tue', 'Wed', 'Thu', 'Fri'])}, {rng.randint(1, 28)} {rng.choice(['Jan', 'Mar', 'Jun', 'Oct'])} 2001 "
            f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00 -0800 (PST)\nFrom: {a}@enron.com\nTo: {b}@enron.com\n"
            f"Subject: {rng.choice(['RE: ', 'FW: ', ''])}{tg.title('general', 5)}\n")
    return tg.prose(rng.choice(["general", "legal"]), target, sep="\n\n", first=head)


def math_qa(tg: TextGen, target: int) -> str:
    rng, lines = tg.rng, []
    while sum(map(len, lines)) < target:
        a, b, x = rng.randint(-20, 20), rng.randint(-99, 99), rng.randint(-12, 12)
        a = a or 3
        q = rng.choice([(f"Solve {a}*x + {b} = {a * x + b} for x.", x), (f"What is {b} + {a}?", a + b),
                        (f"Calculate {a} * {b}.", a * b),
                        (f"What is the remainder when {abs(b) + 20} is divided by {abs(a) + 1}?", (abs(b) + 20) % (abs(a) + 1))])
        lines += [q[0], str(q[1])]
    return "\n".join(lines)


def europarl(tg: TextGen, target: int) -> str:
    rng = tg.rng
    opening = tg.sentence("legal")
    parts = [f"{rng.choice(['Mr President', 'Madam President'])}, {opening[0].lower()}{opening[1:]}"]
    while sum(map(len, parts)) < target:
        if rng.randint(0, 2):
            parts.append(tg.paragraph(rng.choice(["legal", "general"])))
        else:  # interpreted speeches, as in the real proceedings
            parts.append(tg.foreign(rng.choice(["fr", "de", "es", "el"]), 3))
    return "\n".join(parts)


def hn_thread(tg: TextGen, target: int) -> str:
    rng, parts = tg.rng, [tg.title("tech", 8)]
    while sum(map(len, parts)) < target:
        quote = f"> {textwrap.shorten(tg.sentence('tech'), 80, placeholder='...')}\n\n" if rng.randint(0, 2) == 0 else ""
        parts.append(f"{rng.choice(USERS)}: {quote}{tg.paragraph('tech', mix=10)}")
    return "\n\n".join(parts)


def subtitles(tg: TextGen, target: int) -> str:
    lines = []
    while sum(map(len, lines)) < target:
        lines.append(textwrap.shorten(tg.sentence("fiction"), 60, placeholder="..."))
    return "\n".join(lines)


def pile_text(tg: TextGen, name: str, target: int) -> str:
    rng = tg.rng
    if name in ("Books3", "Gutenberg (PG-19)", "BookCorpus2"):
        return book_text(tg, target)
    makers = {
        "Pile-CC": lambda: web_page(tg, target), "OpenWebText2": lambda: web_page(tg, target, "\n\n"),
        "ArXiv": lambda: latex_paper(tg, target), "Github": lambda: code_file(tg, rng.choice(["python", "javascript", "rust", "shell"]), target),
        "FreeLaw": lambda: legal_opinion(tg, target), "StackExchange": lambda: stackexchange_post(tg, target),
        "USPTO Backgrounds": lambda: tg.prose("legal", target, first="BACKGROUND OF THE INVENTION\n\n1. Field of the Invention"),
        "Wikipedia (en)": lambda: wiki_article(tg, target, tg.title("general", 3)), "DM Mathematics": lambda: math_qa(tg, target),
        "Ubuntu IRC": lambda: irc_log(tg, target), "EuroParl": lambda: europarl(tg, target), "HackerNews": lambda: hn_thread(tg, target),
        "OpenSubtitles": lambda: subtitles(tg, target), "YoutubeSubtitles": lambda: subtitles(tg, target),
        "Enron Emails": lambda: email(tg, target),
        "PubMed Central": lambda: tg.prose("science", target, first="Introduction\n============"),
    }
    return makers.get(name, lambda: tg.prose("science", target))()  # abstracts, PhilPapers, NIH ExPorter


# --------------------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class FileStat:
    source: str
    path: str  # relative to the data root
    texts: list[str]
    note: str = ""

    def row(self) -> str:
        sizes = [len(t) for t in self.texts]
        return (f"| `{self.source}` | `{self.path[len(self.source) + 1:]}` | {len(sizes)} | {sum(sizes):,} | {max(sizes):,} | "
                f"{sum(s > LONG for s in sizes)} | {self.note} |")


def jsonl_bytes(records: list[dict], ascii_only: bool = False) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=ascii_only) + "\n" for r in records).encode("utf-8")


def gzip_bytes(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        gz.write(data)
    return buf.getvalue()


def zstd_bytes(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=10, write_content_size=True).compress(data)


def parquet_bytes(table: pa.Table, row_group_size: int = 50) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, row_group_size=row_group_size, compression="zstd", compression_level=9, version="2.6",
                   data_page_version="1.0", use_dictionary=True, write_statistics=True)
    return sink.getvalue().to_pybytes()


def write(root: Path, rel: str, data: bytes) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> int:
    return calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0))


def iso(ts: int, fmt: str = "%Y-%m-%dT%H:%M:%SZ") -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime(fmt)


def hexstr(rng: random.Random, n: int) -> str:
    return f"{rng.getrandbits(4 * n):0{n}x}"


# --------------------------------------------------------------------------------------------------
# The sources
# --------------------------------------------------------------------------------------------------

RW_DUMPS = [("CC-MAIN-2019-30", 2019), ("CC-MAIN-2020-05", 2020), ("CC-MAIN-2021-04", 2021), ("CC-MAIN-2022-05", 2022),
            ("CC-MAIN-2022-49", 2022), ("CC-MAIN-2023-06", 2023)]
# Parquet has no seconds unit (pyarrow reads the column back as timestamp[ms], whole seconds); the fixed
# "huggingface" schema metadata declares timestamp[s], as hub-written files do, for `datasets` readers.
_STR = {"dtype": "string", "_type": "Value"}
RW_FEATURES = {"content": _STR, "url": _STR, "timestamp": {"dtype": "timestamp[s]", "_type": "Value"}, "dump": _STR, "segment": _STR,
               "image_urls": {"feature": {"feature": _STR, "_type": "Sequence"}, "_type": "Sequence"}}
RW_SCHEMA = pa.schema([("content", pa.string()), ("url", pa.string()), ("timestamp", pa.timestamp("s")), ("dump", pa.string()),
                       ("segment", pa.string()), ("image_urls", pa.list_(pa.list_(pa.string())))],
                      metadata={"huggingface": json.dumps({"info": {"features": RW_FEATURES}})})


def refinedweb_rows(rng: random.Random, texts: list) -> dict[str, list]:
    tg, cols = TextGen(rng), {f.name: [] for f in RW_SCHEMA}
    for text in texts:
        dump, year = rng.choice(RW_DUMPS)
        ts = utc(year, rng.randint(1, 12), rng.randint(1, 28), rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59))
        domain = rng.choice(DOMAINS)
        imgs = [[f"https://{domain}/images/{tg.slug()}.jpg", tg.title("general", 4)] for _ in range(rng.choice([0, 0, 0, 1, 2]))]
        for k, v in (("content", text), ("url", f"https://{domain}/{rng.randint(2012, 2023)}/{tg.slug()}"), ("timestamp", ts),
                     ("dump", dump), ("segment", f"{ts}{rng.randint(100, 999)}.{rng.randint(0, 99):02d}"), ("image_urls", imgs)):
            cols[k].append(v)
    return cols


def build_refinedweb(out: Path) -> list[FileStat]:
    stats = []
    for i, n in enumerate([120, 118, 123]):
        rel = f"tiiuae/falcon-refinedweb/data/train-{i:05d}-of-05534-{hexstr(seeded(f'rw-name-{i}'), 16)}.parquet"
        rng = seeded(rel)
        long_at = long_positions(rng, n, [88_000]) if i == 0 else {}
        texts = unique_docs(rng, n, lambda r, _, t: web_page(TextGen(r), t), "web", long_at)
        write(out, rel, parquet_bytes(pa.table(refinedweb_rows(rng, texts), schema=RW_SCHEMA), row_group_size=50))
        stats.append(FileStat("tiiuae/falcon-refinedweb", rel, texts))
    rel = f"tiiuae/falcon-refinedweb/data/train-00003-of-05534-{hexstr(seeded('rw-name-3'), 16)}.parquet"
    rng = seeded(rel)
    long_at = long_tail(rng, (SPAN_2K, 10), (SPAN_4K, 12), (SPAN_16K, 12))
    texts = unique_docs(rng, len(long_at), lambda r, _, t: web_page(TextGen(r), t), "web", long_at)
    write(out, rel, parquet_bytes(pa.table(refinedweb_rows(rng, texts), schema=RW_SCHEMA), row_group_size=8))
    stats.append(FileStat("tiiuae/falcon-refinedweb", rel, texts, "long tail"))
    return stats


def c4_records(rng: random.Random, n: int, profile: str = "c4", long_at: dict[int, int] | None = None) -> list[dict]:
    texts = unique_docs(rng, n, lambda r, _, t: web_page(TextGen(r), t), profile, long_at)
    tg = TextGen(rng)
    return [{"text": t, "timestamp": iso(utc(2019, 4, rng.randint(18, 26), rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59))),
             "url": f"https://{rng.choice(DOMAINS)}/{tg.slug()}"} for t in texts]


def build_c4(out: Path) -> list[FileStat]:
    stats = []
    names = [f"en/c4-train.{i:05d}-of-01024.json.gz" for i in range(4)] + ["en/c4-validation.00000-of-00008.json.gz"]
    for name, n in zip(names, [150, 152, 147, 20, 150]):
        rel = f"allenai/c4/{name}"
        rng = seeded(rel)
        long_at = long_tail(rng, (SPAN_2K, 8), (SPAN_4K, 12)) if name.startswith("en/c4-train.00003") else None
        records = c4_records(rng, n, long_at=long_at)
        write(out, rel, gzip_bytes(jsonl_bytes(records)))
        stats.append(FileStat("allenai/c4", rel, [r["text"] for r in records], "long tail" if long_at else ""))
    return stats


RP = "togethercomputer/RedPajama-Data-1T"


def rp_arxiv(rng, tg, text, i):
    yymm = f"{rng.randint(15, 23):02d}{rng.randint(1, 12):02d}"
    aid = f"{yymm}.{rng.randint(1, 19999):05d}"
    return {"text": text, "meta": {"timestamp": iso(utc(2000 + int(yymm[:2]), int(yymm[2:]), rng.randint(1, 28)), "%Y-%m-%dT%H:%M:%S"),
                                   "yymm": yymm, "arxiv_id": aid, "language": "en", "url": f"https://arxiv.org/abs/{aid}"}}


def rp_book(rng, tg, text, i):
    title = text.split("\n", 1)[0].title()
    return {"text": text, "meta": {"title": title, "short_book_title": title[:30].strip(), "publication_date": rng.randint(1850, 1925),
                                   "url": f"http://www.gutenberg.org/ebooks/{rng.randint(1000, 60000)}"}}


def rp_c4(rng, tg, text, i):
    return {"text": text, "meta": {"timestamp": iso(utc(2019, 4, rng.randint(18, 26), rng.randint(0, 23))),
                                   "url": f"https://{rng.choice(DOMAINS)}/{tg.slug()}", "language": "en", "source": "c4"}}


def rp_github(rng, tg, text, i, lang="Python"):
    lines = text.split("\n")
    repo = f"{rng.choice(USERS)}/{rng.choice(NOUNS)}-{rng.choice(NOUNS)}"
    ext = {"Python": "py", "JavaScript": "js", "Rust": "rs", "Shell": "sh", "Markdown": "md"}[lang]
    return {"text": text, "meta": {
        "content_hash": hexstr(rng, 32), "timestamp": "", "source": "github", "line_count": len(lines),
        "max_line_length": max(map(len, lines)), "avg_line_length": len(text) / len(lines),
        "alnum_prop": sum(c.isalnum() for c in text) / len(text), "repo_name": repo, "id": hexstr(rng, 40), "size": len(text.encode()),
        "binary": False, "copies": rng.randint(1, 5), "ref": "refs/heads/main", "path": f"src/{rng.choice(VERBS)}_{rng.choice(NOUNS)}.{ext}",
        "mode": "33188", "license": rng.choice(["mit", "apache-2.0", "bsd-3-clause"]), "language": lang}}


def rp_stackexchange(rng, tg, text, i):
    meta = {"language": "en", "url": f"https://stackoverflow.com/questions/{rng.randint(10**6, 7 * 10**7)}",
            "timestamp": iso(utc(2023, 3, rng.randint(1, 28)), "%Y-%m-%d"), "question_score": str(rng.randint(-2, 300))}
    return {"text": text, **meta} if rng.randint(1, 4) == 1 else {"text": text, "meta": meta}  # some rows: keys at top level


WIKI_LANGS = ["en"] * 7 + ["de", "fr", "es", "ru"]


def rp_wikipedia(rng, tg, text, i):
    lang, title = text.split("\n", 1)[0].split("|", 1)
    meta = {"title": title, "url": f"https://{lang}.wikipedia.org/wiki/{title.replace(' ', '_')}", "language": lang, "timestamp": "20230320"}
    return {"text": text, **meta} if i % 5 in (1, 3) else {"text": text, "meta": meta}  # 40% of rows: keys at top level


def rp_cc(rng, tg, text, i, source=""):
    wiki = rng.randint(2000, 9999) / 10000
    return {"text": text, "meta": {"pred_label": "__label__wiki" if wiki > 0.5 else "__label__cc", "pred_label_prob": max(wiki, 1 - wiki),
                                   "wiki_prob": wiki, "source": f"{source}/line{i}"}}


@dataclasses.dataclass
class RPFile:
    """One RedPajama file: how many documents, how long, how each text and record is made."""

    name: str  # relative to the RedPajama root
    n: int
    profile: str
    make: object  # (rng, i, target) -> text
    record: object  # (rng, tg, text, i) -> JSON record
    longs: tuple[int, ...] = ()  # targets of the very long documents
    tail: tuple = ()  # or (span, count) pairs: every document of the file is long (see long_tail)
    ascii_only: bool = False  # \u-escape non-ASCII in the JSON (the real files mix both)
    tiny: object = tiny_text


def build_redpajama(out: Path) -> list[FileStat]:
    uuid_rng = seeded("rp-names")
    uuids = [f"{hexstr(uuid_rng, 8)}-{hexstr(uuid_rng, 4)}-4{hexstr(uuid_rng, 3)}-a{hexstr(uuid_rng, 3)}-{hexstr(uuid_rng, 12)}" for _ in range(2)]
    arxiv_names = [f"arxiv_{u}.jsonl" for u in uuids]
    gh_name = f"filtered_{hexstr(uuid_rng, 32)}.sampled.jsonl"
    u = f"{hexstr(uuid_rng, 8)}-{hexstr(uuid_rng, 4)}-4{hexstr(uuid_rng, 3)}-a{hexstr(uuid_rng, 3)}-{hexstr(uuid_rng, 12)}"
    arxiv_names.append(f"arxiv_{u}.jsonl")  # the long-tail file
    gh_langs = ["Python", "JavaScript", "Rust", "Shell", "Markdown"]

    def wiki_tiny(r, i):  # a stub article: just its title
        title = TextGen(r).title("general", 2)
        return f"en|{title}\n{title}"

    def wiki_make(r, i, t):
        tg = TextGen(r)
        lang = r.choice(WIKI_LANGS)
        title = tg.title("general", 3) if lang == "en" else tg.foreign(lang)[:24].strip(" .,")
        return f"{lang}|{title}\n" + wiki_article(tg, t, title, lang)

    web = lambda r, i, t: web_page(TextGen(r), t)  # noqa: E731
    plan = [
        RPFile(f"arxiv/{arxiv_names[0]}", 36, "article", lambda r, i, t: latex_paper(TextGen(r), t), rp_arxiv, ascii_only=True),
        RPFile(f"arxiv/{arxiv_names[1]}", 34, "article", lambda r, i, t: latex_paper(TextGen(r), t), rp_arxiv, ascii_only=True),
        RPFile(f"arxiv/{arxiv_names[2]}", 16, "article", lambda r, i, t: latex_paper(TextGen(r), t), rp_arxiv, ascii_only=True,
               tail=((SPAN_4K, 4), (SPAN_16K, 12))),
        RPFile("book/book.jsonl", 30, "book", lambda r, i, t: book_text(TextGen(r), t), rp_book, longs=(92_000, 110_000)),
        RPFile("c4/c4-train.00000-of-01024.jsonl", 60, "c4", web, rp_c4),
        RPFile(f"github/{gh_name}", 50, "code", lambda r, i, t: code_file(TextGen(r), gh_langs[i % 5].lower(), t),
               lambda r, tg, x, i: rp_github(r, tg, x, i, gh_langs[i % 5]), tiny=lambda r, i: r.choice(TINY_CODE[gh_langs[i % 5].lower()])),
        RPFile("stackexchange/stackexchange.jsonl", 50, "web", lambda r, i, t: stackexchange_post(TextGen(r), t, "rp"), rp_stackexchange,
               ascii_only=True),
        RPFile("wikipedia/wiki.jsonl", 50, "article", wiki_make, rp_wikipedia, tiny=wiki_tiny),
    ]
    for part, n in (("head", 60), ("middle", 55)):
        src = f"cc/2023-06/en_{part}_0000.json.gz"
        plan.append(RPFile(f"common_crawl/2023-06/en_{part}_0000.json.gz.dedup.classifier.jsonl.zst", n, "web", web,
                           lambda r, tg, x, i, s=src: rp_cc(r, tg, x, i, s)))

    stats = []
    for f in plan:
        rel = f"{RP}/{f.name}"
        rng = seeded(rel)
        long_at = long_tail(rng, *f.tail) if f.tail else long_positions(rng, f.n, list(f.longs))
        texts = unique_docs(rng, f.n, f.make, f.profile, long_at, f.tiny)
        tg = TextGen(rng)
        records = [f.record(rng, tg, t, i) for i, t in enumerate(texts)]
        if f.name.startswith("wikipedia/"):  # drop the "lang|title" line the maker used to pass metadata along
            for r in records:
                r["text"] = r["text"].split("\n", 1)[1]
        data = jsonl_bytes(records, f.ascii_only)
        write(out, rel, zstd_bytes(data) if f.name.endswith(".zst") else data)
        top = sum("meta" not in r for r in records)
        note = f"{top} rows with meta keys at top level" if top else "long tail" if f.tail else ""
        stats.append(FileStat(RP, rel, [r["text"] for r in records], note))
    return stats


PILE_WEIGHTS = {"Pile-CC": 18, "PubMed Central": 8, "Books3": 6, "OpenWebText2": 8, "ArXiv": 6, "Github": 6, "FreeLaw": 5,
                "StackExchange": 6, "USPTO Backgrounds": 4, "PubMed Abstracts": 4, "Gutenberg (PG-19)": 2, "OpenSubtitles": 3,
                "Wikipedia (en)": 5, "DM Mathematics": 3, "Ubuntu IRC": 2, "BookCorpus2": 2, "EuroParl": 2, "HackerNews": 2,
                "YoutubeSubtitles": 2, "PhilPapers": 1, "NIH ExPorter": 1, "Enron Emails": 2}
PILE_LONG_SUBSETS = {"PubMed Central", "Books3", "ArXiv", "FreeLaw", "Gutenberg (PG-19)", "Ubuntu IRC", "EuroParl", "BookCorpus2"}


def build_pile(out: Path) -> list[FileStat]:
    stats = []
    names = list(PILE_WEIGHTS)
    for name, n, long_name in (("train/00.jsonl.zst", 100, "Books3"), ("train/01.jsonl.zst", 100, "FreeLaw"),
                               ("val.jsonl.zst", 30, None), ("test.jsonl.zst", 30, None)):
        rel = f"EleutherAI/pile/{name}"
        rng = seeded(rel)
        subsets = rng.choices(names, weights=list(PILE_WEIGHTS.values()), k=n)
        if name.startswith("train/"):  # every one of the 22 subsets occurs in every train file
            subsets[: len(names)] = names
            rng.shuffle(subsets)
        long_at = long_positions(rng, n, [96_000 if long_name == "Books3" else 86_000]) if long_name else {}
        for row in long_at:
            subsets[row] = long_name

        def make(r, i, t):
            if i not in long_at and subsets[i] in PILE_LONG_SUBSETS and t < 2000:
                t = pick_length(r, "article")
            return pile_text(TextGen(r), subsets[i], t)

        texts = unique_docs(rng, n, make, "short", long_at)
        records = [{"text": t, "meta": {"pile_set_name": s}} for t, s in zip(texts, subsets)]
        write(out, rel, zstd_bytes(jsonl_bytes(records)))
        stats.append(FileStat("EleutherAI/pile", rel, texts, f"{len(set(subsets))} subsets"))
    rel = "EleutherAI/pile/train/02.jsonl.zst"
    rng = seeded(rel)
    long_at = long_tail(rng, (SPAN_2K, 10), (SPAN_4K, 12), (SPAN_16K, 12))
    long_names = sorted(PILE_LONG_SUBSETS)
    subsets = [long_names[i % len(long_names)] for i in range(len(long_at))]
    texts = unique_docs(rng, len(long_at), lambda r, i, t: pile_text(TextGen(r), subsets[i], t), "short", long_at)
    records = [{"text": t, "meta": {"pile_set_name": s}} for t, s in zip(texts, subsets)]
    write(out, rel, zstd_bytes(jsonl_bytes(records)))
    stats.append(FileStat("EleutherAI/pile", rel, texts, f"long tail, {len(set(subsets))} subsets"))
    return stats


SC_SCHEMA = pa.schema([("max_stars_repo_path", pa.string()), ("max_stars_repo_name", pa.string()), ("max_stars_count", pa.int64()),
                       ("id", pa.string()), ("content", pa.string())])
SC_FILES = {"python": ("py", 59, [62, 58]), "javascript": ("js", 64, [55, 48]), "rust": ("rs", 8, [50]), "markdown": ("md", 61, [42])}


def build_starcoder(out: Path) -> list[FileStat]:
    stats, next_id = [], 0
    files = [(lang, ext, total, i, n) for lang, (ext, total, counts) in SC_FILES.items() for i, n in enumerate(counts)]
    for lang, ext, total, i, n in files + [("python", "py", 59, 2, 16)]:  # the long-tail file last: ids above stay put
        rel = f"bigcode/starcoderdata/{lang}/train-{i:05d}-of-{total:05d}.parquet"
        rng = seeded(rel)
        tail = (lang, i) == ("python", 2)
        if tail:
            long_at = long_tail(rng, (SPAN_4K, 4), (SPAN_16K, 12))
        else:
            long_at = long_positions(rng, n, [90_000]) if (lang, i) == ("python", 0) else {}
        codes = unique_docs(rng, n, lambda r, _, t: code_file(TextGen(r), lang, t), "code", long_at,
                            tiny=lambda r, _: r.choice(TINY_CODE[lang]))
        cols = {f.name: [] for f in SC_SCHEMA}
        for code in codes:
            repo = f"{rng.choice(USERS)}/{rng.choice(NOUNS)}-{rng.choice(['rs', 'js', 'py', 'kit', 'lib', 'tools'])}"
            path = "README.md" if ext == "md" and rng.randint(0, 1) else f"src/{rng.choice(VERBS)}_{rng.choice(NOUNS)}.{ext}"
            for k, v in (("max_stars_repo_path", path), ("max_stars_repo_name", repo),
                         ("max_stars_count", rng.choice([0, 0, 1, 3, 12, 150, 2400, 31000])), ("id", str(next_id)), ("content", code)):
                cols[k].append(v)
            next_id += 1
        write(out, rel, parquet_bytes(pa.table(cols, schema=SC_SCHEMA), row_group_size=32))
        stats.append(FileStat("bigcode/starcoderdata", rel, codes, "long tail" if tail else ""))
    return stats


def note_text(tg: TextGen, target: int) -> str:
    rng = tg.rng
    kind = rng.randint(1, 3)
    if kind == 1:  # meeting notes
        items = "\n".join(f"- {comment_text(tg)} {rng.choice(['', '✅', '⚠️', '👩‍💻'])}".rstrip() for _ in range(rng.randint(2, 7)))
        return f"## Notes {iso(utc(2024, rng.randint(1, 12), rng.randint(1, 28)), '%Y-%m-%d')}\n\n{items}\n\n" + tg.prose("tech", target, mix=25)
    if kind == 2:  # runbook with a shell snippet
        script = shell_file(tg, rng.randint(100, 600)).rstrip()
        return f"# Runbook: {tg.title('tech', 4)}\n\n{tg.paragraph('tech')}\n\n```bash\n{script}\n```\n\n" + tg.prose("tech", target // 2)
    return tg.prose(rng.choice(["general", "tech", "science"]), target, mix=40)


def build_internal(out: Path) -> list[FileStat]:
    stats = []
    for name in ("part-00000.jsonl", "part-00001.parquet"):
        rel = f"internal/notes/{name}"
        rng = seeded(rel)
        texts = unique_docs(rng, 40, lambda r, _, t: note_text(TextGen(r), t), "web")
        ids = [f"note-{name[5:10]}-{k:04d}" for k in range(len(texts))]
        created = [iso(utc(2024, rng.randint(1, 12), rng.randint(1, 28), rng.randint(0, 23))) for _ in texts]
        if name.endswith(".jsonl"):
            write(out, rel, jsonl_bytes([{"id": i, "body": t, "created_at": c} for i, t, c in zip(ids, texts, created)]))
        else:
            write(out, rel, parquet_bytes(pa.table({"id": ids, "body": texts, "created_at": created}), row_group_size=20))
        stats.append(FileStat("internal/notes", rel, texts, "text field `body`"))
    return stats


def write_samples_readme(out: Path, stats: list[FileStat]) -> None:
    lines = ["# Sample data", "",
             "Generated by `scripts/make_samples.py` (do not edit by hand: run `make samples`). Deterministic: every run writes",
             "byte-identical files. All text is synthetic, recombined from passages embedded in the script.", "",
             f"Characters are Unicode code points; \"> 80k\" counts documents longer than {LONG:,} characters.", "",
             "| source | file | docs | total chars | max chars | > 80k | note |", "| --- | --- | ---: | ---: | ---: | ---: | --- |"]
    lines += [s.row() for s in stats]
    lines += ["", f"Total: {len(stats)} files, {sum(len(s.texts) for s in stats):,} documents, "
              f"{sum(len(t) for s in stats for t in s.texts):,} characters.", ""]
    write(out, "README.md", "\n".join(lines).encode("utf-8"))


# --------------------------------------------------------------------------------------------------
# The bad set
# --------------------------------------------------------------------------------------------------


def truncate(data: bytes, keep_percent: int = 70) -> bytes:
    return data[: len(data) * keep_percent // 100]


def complete_lines(partial: bytes) -> int:
    return partial.count(b"\n")


def build_bad(bad: Path) -> list[tuple[str, str, str]]:
    """Write the broken files; return README rows (file, contents, what a reader must do)."""
    rng, rows = seeded("bad"), []
    tg = TextGen(rng)
    def good(n, make):
        return unique_docs(rng, n, lambda r, _, t: make(t), "small", tiny=lambda r, _: tg.sentence())


    texts = good(5, lambda t: latex_paper(tg, t))
    lines = [json.dumps(rp_arxiv(rng, tg, t, 0)).encode() for t in texts]
    lines += [b'{"text": "unterminated', b'{"meta": {}}', b'{"text": "caf\xff\xfe bytes", "meta": {}}',
              json.dumps({"text": "   \n\t ", "meta": {}}).encode(), json.dumps({"text": "", "meta": {}}).encode()]
    write(bad, "redpajama/arxiv/arxiv_bad.jsonl", b"\n".join(lines) + b"\n")
    rows.append(("redpajama/arxiv/arxiv_bad.jsonl", "10 lines: 5 good records, then line 6 malformed JSON, 7 no `text`, "
                 "8 invalid UTF-8 bytes (0xFF 0xFE) inside the string, 9 whitespace-only text, 10 empty text",
                 "5 documents (lines 1-5); rejects: 6 `malformed_json`, 7 `missing_text`, 8 `invalid_utf8`, 9 `empty_text`, 10 `empty_text`"))

    texts = good(4, lambda t: book_text(tg, t))
    lines = [json.dumps(rp_book(rng, tg, t, 0)).encode() for t in texts[:3]]
    lines += [b'{"text": 42, "meta": {}}', b"", json.dumps(rp_book(rng, tg, texts[3], 0)).encode()]
    write(bad, "redpajama/book/book.jsonl", b"\n".join(lines) + b"\n")
    rows.append(("redpajama/book/book.jsonl", "6 lines: 3 good records, line 4 `\"text\": 42`, line 5 empty, line 6 good",
                 "4 documents (lines 1, 2, 3, 6); rejects: 4 `wrong_type`, 5 `blank_line`"))

    recs = c4_records(rng, 20, "small")
    data = gzip_bytes(jsonl_bytes(recs))
    cut = truncate(data)
    ok = complete_lines(zlib.decompressobj(31).decompress(cut))
    write(bad, "c4/en/c4-train.00000-of-01024.json.gz", cut)
    rows.append(("c4/en/c4-train.00000-of-01024.json.gz", f"gzip of 20 good records cut to {len(cut)} of {len(data)} bytes "
                 f"(ends mid-stream); {ok} complete lines decompress before the cut",
                 f"yield at most the {ok} complete lines, never the partial line {ok + 1}; then report the file as truncated/corrupt "
                 "(an error, or a skipped corrupt file when so configured)"))

    texts = good(20, lambda t: pile_text(tg, "Pile-CC", t))
    cobj = zstandard.ZstdCompressor(level=10).compressobj()  # one block per record, as streaming writers do
    parts = [cobj.compress(jsonl_bytes([{"text": t, "meta": {"pile_set_name": "Pile-CC"}}])) + cobj.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
             for t in texts]
    data = b"".join(parts) + cobj.flush()
    cut = truncate(data)
    ok = complete_lines(zstandard.ZstdDecompressor().decompressobj().decompress(cut))
    write(bad, "pile/train/00.jsonl.zst", cut)
    rows.append(("pile/train/00.jsonl.zst", f"zstd frame of 20 good records (one block each) cut to {len(cut)} of {len(data)} bytes; "
                 f"{ok} complete lines decompress before the cut",
                 f"yield at most those {ok} lines; then report the file as truncated "
                 "(zstandard's stream reader ends silently: check that the frame ended)"))

    names = ["Stack Exchange", "stackexchange", None, "StackExchange", "PILE-CC", "Pile-CC", "Wikipedia (en)", "wikipedia (EN)"]
    texts = good(8, lambda t: tg.prose("general", t))
    recs = [{"text": t, "meta": {"pile_set_name": s} if s else {}} for t, s in zip(texts, names)]
    write(bad, "pile/val.jsonl.zst", zstd_bytes(jsonl_bytes(recs)))
    rows.append(("pile/val.jsonl.zst", "valid zstd, 8 records; line 3 has no `meta.pile_set_name`; names: "
                 + ", ".join(f'"{s}"' for s in names if s),
                 "7 documents + reject line 3 `missing_subset`; subsets normalise to StackExchange 3, Pile-CC 2, Wikipedia (en) 2"))

    good_rw = refinedweb_rows(rng, good(6, lambda t: web_page(tg, t)))
    real = parquet_bytes(pa.table(good_rw, schema=RW_SCHEMA))
    garbage = bytes(rng.getrandbits(8) for _ in range(2000))
    assert garbage[-4:] != b"PAR1"
    write(bad, "refinedweb/data/train-00000-of-05534-0000000000000000.parquet", real[:100] + garbage)
    rows.append(("refinedweb/data/train-00000-of-05534-0000000000000000.parquet",
                 "not parquet: the first 100 bytes of a real parquet file, then 2000 random bytes (no footer)",
                 "0 documents; report the file as corrupt (unreadable parquet)"))

    cols = refinedweb_rows(rng, good(6, lambda t: web_page(tg, t)))
    cols = {("text" if k == "content" else k): v for k, v in cols.items()}
    schema = pa.schema([pa.field("text", pa.string()) if f.name == "content" else f for f in RW_SCHEMA])
    write(bad, "refinedweb/data/train-00001-of-05534-0000000000000001.parquet", parquet_bytes(pa.table(cols, schema=schema)))
    rows.append(("refinedweb/data/train-00001-of-05534-0000000000000001.parquet",
                 "valid parquet, 6 rows, no `content` column (the text is in `text`)",
                 "0 documents; report the file as structurally wrong (missing text column), not 6 row rejects"))

    cols = refinedweb_rows(rng, good(6, lambda t: web_page(tg, t)))
    cols["content"][2], cols["content"][4] = None, ""
    write(bad, "refinedweb/data/train-00002-of-05534-0000000000000002.parquet", parquet_bytes(pa.table(cols, schema=RW_SCHEMA)))
    rows.append(("refinedweb/data/train-00002-of-05534-0000000000000002.parquet",
                 "valid parquet, 6 rows; row #2 (0-based) `content` is null, row #4 is `\"\"`",
                 "4 documents (rows #0, #1, #3, #5); rejects: #2 `missing_text`, #4 `empty_text`"))
    return rows


def write_bad_readme(bad: Path, rows: list[tuple[str, str, str]]) -> None:
    lines = ["# Broken input files for the reader tests", "",
             "Generated by `scripts/make_samples.py --bad-out tests/data/bad` (deterministic). Same hub-like layout as `samples/`,",
             "one folder per source kind. Lines are 1-based, parquet rows 0-based (`#N`), as in document ids.", "",
             "| file | contents | what a reader must do |", "| --- | --- | --- |"]
    lines += [f"| `{f}` | {c} | {d} |" for f, c, d in rows]
    write(bad, "README.md", ("\n".join(lines) + "\n").encode("utf-8"))


# --------------------------------------------------------------------------------------------------


SAMPLE_FOLDERS = ["tiiuae/falcon-refinedweb", "allenai/c4", RP, "EleutherAI/pile", "bigcode/starcoderdata", "internal/notes"]
BAD_FOLDERS = ["redpajama", "c4", "pile", "refinedweb"]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("samples"), help="data root for the sample sources")
    ap.add_argument("--bad-out", type=Path, default=Path("tests/data/bad"), help="folder for the broken files")
    args = ap.parse_args(argv)

    for root, folders in ((args.out, SAMPLE_FOLDERS), (args.bad_out, BAD_FOLDERS)):
        for folder in folders:  # rebuild the folders this script owns, so no stale file survives
            shutil.rmtree(root / folder, ignore_errors=True)

    stats = build_refinedweb(args.out) + build_c4(args.out) + build_redpajama(args.out) + build_pile(args.out)
    stats += build_starcoder(args.out) + build_internal(args.out)
    write_samples_readme(args.out, stats)
    write_bad_readme(args.bad_out, build_bad(args.bad_out))
    print(f"wrote {len(stats)} sample files ({sum(len(s.texts) for s in stats)} documents) under {args.out}, bad set under {args.bad_out}")


if __name__ == "__main__":
    main()
