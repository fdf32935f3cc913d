#include <transmamba/transmamba.hpp>
#include <cstdio>
int main(){ std::puts("placeholder"); }
