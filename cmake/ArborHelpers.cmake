# Helpers so every library, binary and test is declared the same way.

set(ARBOR_WARNINGS -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers)
if(ARBOR_WERROR)
  list(APPEND ARBOR_WARNINGS -Werror)
endif()
if(ARBOR_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all)
  add_link_options(-fsanitize=address,undefined)
endif()
if(ARBOR_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "ARBOR_FUZZ needs clang (libFuzzer): -DCMAKE_CXX_COMPILER=clang++")
  endif()
  # Coverage for libFuzzer in every library the targets link; the targets add the driver.
  add_compile_options(-fsanitize=fuzzer-no-link)
endif()

function(_arbor_set_common target)
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:${ARBOR_WARNINGS}>)
endfunction()

# arbor_cc_library(NAME name SRCS ... [HDRS ...] [DEPS ...] [PUBLIC_INCLUDE dir])
# Defines target arbor_<name>; headers live under include/arbor/<lib>/.
function(arbor_cc_library)
  cmake_parse_arguments(A "" "NAME" "SRCS;DEPS;PRIVATE_DEPS" ${ARGN})
  add_library(arbor_${A_NAME} ${A_SRCS})
  target_include_directories(arbor_${A_NAME} PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/include)
  target_link_libraries(arbor_${A_NAME} PUBLIC ${A_DEPS} PRIVATE ${A_PRIVATE_DEPS})
  _arbor_set_common(arbor_${A_NAME})
endfunction()

# arbor_service_library(NAME target SRCS ... DEPS ... [PRIVATE_DEPS ...])
# A service's code as a library, for its main and the tests beside it. Its headers stay private:
# only files in the service's own folder include them (by relative path). A test or bench
# elsewhere that runs the service in process says so with arbor_embed_service.
function(arbor_service_library)
  cmake_parse_arguments(A "" "NAME" "SRCS;DEPS;PRIVATE_DEPS" ${ARGN})
  add_library(${A_NAME} ${A_SRCS})
  target_link_libraries(${A_NAME} PUBLIC ${A_DEPS} PRIVATE ${A_PRIVATE_DEPS})
  _arbor_set_common(${A_NAME})
endfunction()

# arbor_embed_service(consumer folder target...)
# Lets `consumer` (a test or bench) run the service in services/<folder> in process: links the
# service's library targets and sees its private headers. Does nothing if `consumer` is not
# built (tests off).
function(arbor_embed_service consumer folder)
  if(TARGET ${consumer})
    target_include_directories(${consumer} PRIVATE ${PROJECT_SOURCE_DIR}/services/${folder})
    target_link_libraries(${consumer} PRIVATE ${ARGN})
  endif()
endfunction()

# arbor_cc_binary(NAME name SRCS ... DEPS ... [OUTPUT_NAME out])
function(arbor_cc_binary)
  cmake_parse_arguments(A "" "NAME;OUTPUT_NAME" "SRCS;DEPS" ${ARGN})
  add_executable(${A_NAME} ${A_SRCS})
  target_link_libraries(${A_NAME} PRIVATE ${A_DEPS})
  if(A_OUTPUT_NAME)
    set_target_properties(${A_NAME} PROPERTIES OUTPUT_NAME ${A_OUTPUT_NAME})
  endif()
  set_target_properties(${A_NAME} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)
  _arbor_set_common(${A_NAME})
endfunction()

# arbor_cc_test(NAME name SRCS ... DEPS ... [LABELS ...])
# One GoogleTest binary registered with CTest; tests run from the source root so that fixtures
# under models/ and tests/data/ resolve the same way everywhere.
function(arbor_cc_test)
  if(NOT ARBOR_BUILD_TESTS)
    return()
  endif()
  cmake_parse_arguments(A "" "NAME" "SRCS;DEPS;LABELS" ${ARGN})
  add_executable(${A_NAME} ${A_SRCS})
  target_link_libraries(${A_NAME} PRIVATE ${A_DEPS} GTest::gtest GTest::gmock GTest::gtest_main)
  target_compile_definitions(${A_NAME} PRIVATE ARBOR_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
  set_target_properties(${A_NAME} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
  _arbor_set_common(${A_NAME})
  add_test(NAME ${A_NAME} COMMAND ${A_NAME} WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
  if(A_LABELS)
    set_tests_properties(${A_NAME} PROPERTIES LABELS "${A_LABELS}")
  endif()
endfunction()
