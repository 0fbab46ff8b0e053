"""The generated inputs of the mode checks: a BERT teacher preset with random weights and a
word vocabulary, an unlabelled corpus, a two-class text-classification task as TSV files (train,
dev) and an unlabelled transfer set. `write` runs in the `--assets_worker` child (keras-hub,
TensorFlow allowed, JAX on the CPU); everything else is plain Python, seeded, so two runs write
the same files."""

from __future__ import annotations

import itertools
import json
import os
import random

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
LABELS = ("neg", "pos")
MARKERS = 8  # words that mark each class; every other word is filler


def words(n):
    """`n` distinct lowercase pseudo-words (two or three consonant-vowel syllables)."""
    syllables = [c + v for c, v in itertools.product("bdfgklmnprstvz", "aeiou")]
    two = ("".join(p) for p in itertools.product(syllables, repeat=2))
    three = ("".join(p) for p in itertools.product(syllables, repeat=3))
    return list(itertools.islice(itertools.chain(two, three), n))


def vocabulary(size):
    return SPECIAL + words(size - len(SPECIAL))


def _sentence(rng, vocab, label, length):
    """Filler words plus one or two markers of class `label` (the first 2 * MARKERS words are
    the markers, MARKERS per class): learnable from the tokens alone."""
    pool = vocab[len(SPECIAL):]
    markers = pool[label * MARKERS:(label + 1) * MARKERS]
    filler = pool[len(LABELS) * MARKERS:]
    out = [rng.choice(filler) for _ in range(length)]
    for _ in range(rng.randint(1, 2)):
        out.insert(rng.randrange(len(out) + 1), rng.choice(markers))
    return " ".join(out)


def write_task(path, vocab, rows, max_words, seed):
    """A TSV task (header `text<TAB>label`), classes alternating."""
    rng = random.Random(seed)
    with open(path, "w") as f:
        f.write("text\tlabel\n")
        for i in range(rows):
            length = rng.randint(3, max_words - 2)
            f.write(f"{_sentence(rng, vocab, i % 2, length)}\t{LABELS[i % 2]}\n")
    return path


def write_transfer(path, vocab, rows, max_words, seed):
    """Unlabelled task-shaped text, one example per line (a .txt transfer set)."""
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(rows):
            text = _sentence(rng, vocab, rng.randrange(2), rng.randint(3, max_words - 2))
            f.write(text + "\n")
    return path


def write_corpus(path, vocab, docs, max_words, seed):
    """One document per line, 5 to `max_words` filler and marker words."""
    rng = random.Random(seed)
    pool = vocab[len(SPECIAL):]
    with open(path, "w") as f:
        for _ in range(docs):
            f.write(" ".join(rng.choice(pool) for _ in range(rng.randint(5, max_words))) + "\n")
    return path


def write_teacher(path, vocab, arch, max_sequence_length, seed=0):
    """A keras-hub BertBackbone preset (random weights) with a BertTokenizer of `vocab`."""
    import keras
    import keras_hub

    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=len(vocab), max_sequence_length=max_sequence_length, **arch)
    backbone.save_to_preset(path)
    keras_hub.tokenizers.BertTokenizer(vocabulary=list(vocab), lowercase=True).save_to_preset(path)
    return path


def write(directory, sizes):
    """Every input of the mode checks under `directory`; their paths (and the launcher's
    packaged config directory) as a dict, also written to `directory/assets.json`."""
    from tinybert_tf.launch import config_lib

    os.makedirs(directory, exist_ok=True)
    vocab = vocabulary(sizes.vocab)
    words_per_row = min(sizes.task_words, sizes.seq - 2)  # [CLS] ... [SEP]: rows fit the seq
    at = {k: os.path.join(directory, k) for k in
          ("teacher", "corpus.txt", "train.tsv", "dev.tsv", "transfer.txt")}
    out = {
        "teacher": write_teacher(at["teacher"], vocab, sizes.teacher, sizes.seq),
        "corpus": write_corpus(at["corpus.txt"], vocab, sizes.corpus_docs, sizes.seq, 0),
        "train": write_task(at["train.tsv"], vocab, sizes.train_rows, words_per_row, 1),
        "dev": write_task(at["dev.tsv"], vocab, sizes.dev_rows, words_per_row, 2),
        "transfer": write_transfer(at["transfer.txt"], vocab, sizes.transfer_rows,
                                   words_per_row, 3),
        "config_dir": config_lib.CONFIG_DIR,
        "vocab": len(vocab),
    }
    with open(os.path.join(directory, "assets.json"), "w") as f:
        json.dump(out, f, indent=1)
    return out
