"""What the tests and the bench share: fake chat-platform servers, the demo shop's files,
synthetic indexes, hostile images and a load generator. The bench imports these, so they
import neither pytest, nor conftest, nor any test module."""
