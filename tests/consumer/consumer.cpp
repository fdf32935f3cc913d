#include <transmamba/transmamba.hpp>

int main() { return transmamba::version_major == 0 ? 0 : 1; }
