"""The toy datasets: a character model trained on toy_corpus samples words of its grammar."""

import numpy as np

from nplstm import Adam, SequenceModel, fit
from nplstm.datasets import CharVocabulary, char_windows, corpus_words, sample_text, toy_corpus


def test_char_windows_pair_each_character_with_the_next():
    text = toy_corpus(20, seed=1)
    vocab = CharVocabulary(text)
    X, Y = char_windows(text, 7, vocab)
    assert X.shape == (len(Y), 7, len(vocab)) and len(Y) == (len(text) - 1) // 7
    assert vocab.decode(X[3].argmax(axis=1)) == text[21:28] and vocab.decode(Y[3]) == text[22:29]


def test_a_character_model_samples_words_of_the_corpus():
    """Trained on the grammar's text, sampling with the carried state gives mostly the grammar's words."""
    text = toy_corpus(400, seed=0)
    vocab = CharVocabulary(text)
    X, Y = char_windows(text, 25, vocab)
    model = SequenceModel(len(vocab), 64, len(vocab), many_to_many=True, seed=0)
    history = fit(model, X, Y, loss="cross_entropy", epochs=10, batch_size=16, seed=0, verbose=0,
                  optimizer=Adam(model.parameters(), lr=1e-2), clip_norm=1.0)
    assert history.loss[-1] < 0.5 * history.loss[0]
    sample = sample_text(model, vocab, "the ", 300, temperature=0.8, seed=0)
    assert len(sample) == 304
    words = [w.strip(".") for w in sample.split()][1:-1]  # the last word may be cut off
    assert np.mean([w in corpus_words() for w in words]) > 0.8, sample
