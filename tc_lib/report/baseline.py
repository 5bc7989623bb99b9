"""A classical reference for the report: TF-IDF (uni+bigrams) + logistic regression (scikit-learn)."""

from __future__ import annotations

def tfidf_baseline(train_texts, train_labels, test_texts, test_labels, num_classes: int) -> dict:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from ..metrics import classification_metrics

    model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1),
                          LogisticRegression(max_iter=2000, C=10.0))
    model.fit(train_texts, train_labels)
    return classification_metrics(labels=test_labels, predictions=model.predict(test_texts), num_classes=num_classes)
