# System packages, all from Debian (installed by tools/setup.sh).
find_package(absl CONFIG REQUIRED)
find_package(nlohmann_json CONFIG REQUIRED)
find_package(spdlog CONFIG REQUIRED)
find_package(Threads REQUIRED)
find_package(OpenSSL REQUIRED)  # libcrypto: token hashes; libssl: gRPC's TLS
find_package(PkgConfig REQUIRED)
pkg_check_modules(OPENBLAS REQUIRED IMPORTED_TARGET openblas)
pkg_check_modules(SENTENCEPIECE REQUIRED IMPORTED_TARGET sentencepiece)
if(ARBOR_BUILD_TESTS)
  find_package(GTest CONFIG REQUIRED)
endif()
if(ARBOR_BUILD_BENCHMARKS)
  find_package(benchmark CONFIG REQUIRED)
endif()
find_package(Protobuf REQUIRED)  # CMake's FindProtobuf: protobuf::libprotobuf, protobuf_generate
find_package(gRPC CONFIG REQUIRED)
find_package(prometheus-cpp CONFIG REQUIRED)
find_program(ARBOR_GRPC_CPP_PLUGIN grpc_cpp_plugin REQUIRED)
