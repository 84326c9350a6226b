"""The retrieval stage: catalog embeddings, k-NN indexes, the recommender the app serves, and its evaluation."""
