"""The Docker engine adapter: blocking SDK calls kept off the trio thread, runs and images."""
